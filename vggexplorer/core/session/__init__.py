"""The session: runs, selection, current settings and prediction, Qt-free."""
