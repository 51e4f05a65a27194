"""US macro series: FRED (fredapi) with revisions and vintages, and their storage."""
