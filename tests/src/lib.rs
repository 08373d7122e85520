//! Test support for system tests.
