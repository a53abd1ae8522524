"""Data sets shipped with or built by flowsteer, one module per data set."""
