use crate::{AeadId, err::Res};

pub trait Decrypt {
    #[allow(dead_code)] // veil patch: used by the stream feature only now.
    fn open(&mut self, aad: &[u8], ct: &[u8]) -> Res<Vec<u8>>;
    #[allow(dead_code)] // Used by stream feature.
    fn alg(&self) -> AeadId;
}

pub trait Encrypt {
    #[allow(dead_code)] // veil patch: used by the stream feature only now.
    fn seal(&mut self, aad: &[u8], ct: &[u8]) -> Res<Vec<u8>>;
    #[allow(dead_code)] // Used by stream feature.
    fn alg(&self) -> AeadId;
}
