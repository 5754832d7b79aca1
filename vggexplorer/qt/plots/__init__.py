"""Plots: the memory plot, the category plot and their exporters."""
