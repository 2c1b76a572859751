//! `veil-images`: builds the sealed, measured confidential-VM image, and computes the
//! launch measurements such an image must produce ([`measure`]).

pub mod manifest;
pub mod measure;
