//! Randomness from the operating system's CSPRNG (getrandom), and nothing else.

use crate::CoreError;

/// Fill `buf` with bytes from the OS CSPRNG.
pub fn fill(buf: &mut [u8]) -> Result<(), CoreError> {
    getrandom::fill(buf).map_err(|_| CoreError::Random)
}

/// `N` random bytes from the OS CSPRNG.
pub fn bytes<const N: usize>() -> Result<[u8; N], CoreError> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}
