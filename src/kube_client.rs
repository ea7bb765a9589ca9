//! PLACEHOLDER — being written; must not land as is.
