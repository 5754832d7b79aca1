"""Foundations every stage may use: errors, byte units and formatting, safe file reads and atomic writes."""
