"""Target TOML files shipped with edgekd (a package only so that installs carry them)."""
