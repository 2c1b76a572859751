//! Whole-system tests live in `tests/`; they start the real binaries.
