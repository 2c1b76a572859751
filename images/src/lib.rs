//! `veil-images`: builds the sealed, measured confidential-VM image ([`build`]), writes
//! its [`manifest`], and computes the launch measurements such an image must produce
//! ([`measure`], applied to built artifacts by [`launch`]).

pub mod build;
pub mod launch;
pub mod manifest;
pub mod measure;
