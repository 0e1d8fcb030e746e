"""The project ``edgekd init`` writes (package data, not imported by edgekd)."""
