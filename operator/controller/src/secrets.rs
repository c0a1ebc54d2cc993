//! Generated secret values. Never logged: callers put them only into Secret objects.

use std::io::Read as _;

/// `N` bytes from the OS's random source.
pub fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A 32-character alphanumeric password (safe inside a connection URL).
pub fn generate_password() -> std::io::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut password = String::with_capacity(32);
    while password.len() < 32 {
        // Rejection sampling keeps the distribution uniform over the 62 characters.
        for byte in random_bytes::<64>()? {
            if usize::from(byte) < 62 * 4 && password.len() < 32 {
                password.push(char::from(ALPHABET[usize::from(byte) % 62]));
            }
        }
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_long_distinct_and_url_safe() {
        let a = super::generate_password().expect("random");
        let b = super::generate_password().expect("random");
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
    }
}
