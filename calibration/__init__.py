"""Calibration data shipped with edgekd (a package only so that installs carry it)."""
