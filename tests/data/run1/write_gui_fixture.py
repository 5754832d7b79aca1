"""Write run.json through MainWindow's own run and save path, offscreen (how gui.run.json was made).

Usage: ``PYTHONPATH=. QT_QPA_PLATFORM=offscreen python tests/data/run1/write_gui_fixture.py DIR``
"""

import sys
from pathlib import Path

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication, QLabel

from vggexplorer.qt.main_window import MainWindow
from vggexplorer.qt.settings import AppSettings


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    app = QApplication([])
    w = MainWindow(AppSettings.at(str(out / "settings.ini")), discover=False)
    w.show()
    w.load_preset("fc")
    w.controls.batch.setValue(1)
    w.controls.input_h.setValue(32)
    w.controls.iterations.setValue(1)
    w.controls.mode.setCurrentIndex(w.controls.mode.findData("train"))
    loop = QEventLoop()
    w.runEnded.connect(loop.quit)
    QTimer.singleShot(240_000, loop.quit)
    assert w.start_run()
    loop.exec()
    r = w.current_run()
    if r is None:
        print("no run:", [lb.text() for lb in w.message_bar.findChildren(QLabel)])
    assert r is not None and r.status == "ok", r
    assert w.save_run(out / "run.json", r)
    w.shutdown()
    app.processEvents()


if __name__ == "__main__":
    main()
