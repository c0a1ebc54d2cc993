//! Generated secret values. Held as [`SecretString`], which neither Debug nor Display shows;
//! the value is exposed only where it is written into a Secret object.

pub use secrecy::{ExposeSecret, SecretString};

/// The characters of a password: alphanumeric, so it is safe inside a connection URL.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LENGTH: usize = 32;

/// A 32-character alphanumeric password from the operating system's random source.
pub fn generate_password() -> Result<SecretString, getrandom::Error> {
    let mut password = String::with_capacity(LENGTH);
    while password.len() < LENGTH {
        let mut bytes = [0u8; 64];
        getrandom::fill(&mut bytes)?;
        // Rejection sampling keeps the distribution uniform over the 62 characters.
        for byte in bytes {
            let byte = usize::from(byte);
            if byte < ALPHABET.len() * 4 && password.len() < LENGTH {
                password.push(char::from(ALPHABET[byte % ALPHABET.len()]));
            }
        }
    }
    Ok(SecretString::from(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_distinct_and_url_safe() {
        let a = generate_password().expect("random");
        let b = generate_password().expect("random");
        assert_eq!(a.expose_secret().len(), 32);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert!(a.expose_secret().bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn debug_does_not_show_a_password() {
        let password = generate_password().expect("random");
        assert!(!format!("{password:?}").contains(password.expose_secret()));
    }
}
