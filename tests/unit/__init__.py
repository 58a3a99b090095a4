"""Fast unit tests of nxrun's pure parts, one file per module; a failure names the function."""
