"""The digits-images example project (package data, not imported by edgekd)."""
