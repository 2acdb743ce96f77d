//! License keys: 135 bits in Crockford base32 with a Luhn mod 32 check
//! character, printed as seven groups of four (`XXXX-XXXX-…`). The check
//! character catches every single mistyped character and most adjacent
//! swaps before any lookup; lookups use the SHA-256 digest of the
//! normalised key, never the key.

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const DATA_CHARS: usize = 27;
pub const KEY_CHARS: usize = DATA_CHARS + 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a license key has 28 characters (7 groups of 4)")]
    Length,
    #[error("a license key uses only Crockford base32 characters")]
    Character,
    #[error("the license key's check character does not match: it was mistyped")]
    Check,
}

fn value(c: u8) -> Option<u32> {
    let c = match c.to_ascii_uppercase() {
        b'O' => b'0',
        b'I' | b'L' => b'1',
        c => c,
    };
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// Luhn mod N (N = 32): the character that makes the whole string check.
fn check_char(values: &[u32]) -> u32 {
    let mut factor = 2;
    let mut sum = 0;
    for &v in values.iter().rev() {
        let addend = factor * v;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 32 + addend % 32;
    }
    (32 - sum % 32) % 32
}

fn checks(values: &[u32]) -> bool {
    let mut factor = 1;
    let mut sum = 0;
    for &v in values.iter().rev() {
        let addend = factor * v;
        factor = if factor == 2 { 1 } else { 2 };
        sum += addend / 32 + addend % 32;
    }
    sum % 32 == 0
}

/// Formats the first 135 bits of `entropy` (at least 17 bytes) as a key.
pub fn format(entropy: &[u8]) -> String {
    let mut values = Vec::with_capacity(KEY_CHARS);
    let mut acc: u32 = 0;
    let mut bits = 0;
    // Short entropy is padded with zeros; callers pass at least 17 bytes.
    for &b in entropy.iter().chain(std::iter::repeat(&0u8)) {
        if values.len() == DATA_CHARS {
            break;
        }
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && values.len() < DATA_CHARS {
            bits -= 5;
            values.push((acc >> bits) & 31);
        }
        acc &= (1 << bits) - 1;
    }
    values.push(check_char(&values));
    let chars: Vec<char> = values
        .iter()
        .map(|&v| ALPHABET[v as usize] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The canonical form of a typed key (upper case, no separators, O→0,
/// I/L→1), after checking its length, alphabet and check character.
pub fn normalize(typed: &str) -> Result<String, KeyError> {
    let raw: Vec<u8> = typed
        .bytes()
        .filter(|b| !matches!(b, b'-' | b' '))
        .collect();
    if raw.len() != KEY_CHARS {
        return Err(KeyError::Length);
    }
    let values: Vec<u32> = raw
        .iter()
        .map(|&b| value(b))
        .collect::<Option<_>>()
        .ok_or(KeyError::Character)?;
    if !checks(&values) {
        return Err(KeyError::Check);
    }
    Ok(values
        .iter()
        .map(|&v| ALPHABET[v as usize] as char)
        .collect())
}

/// Hex SHA-256 of a normalised key: what events and lookups carry.
pub fn digest(normalized: &str) -> String {
    hex::encode(Sha256::digest(normalized.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> String {
        format(&[0xA5; 17])
    }

    #[test]
    fn a_formatted_key_has_seven_groups_and_checks() {
        let k = key();
        assert_eq!(k.len(), KEY_CHARS + 6);
        assert_eq!(k.split('-').count(), 7);
        assert!(normalize(&k).is_ok());
        assert_eq!(normalize(&k.to_lowercase()), normalize(&k));
    }

    #[test]
    fn every_single_mistyped_character_is_caught() {
        let k = normalize(&key()).expect("valid");
        for i in 0..k.len() {
            for &c in ALPHABET {
                if k.as_bytes()[i] == c {
                    continue;
                }
                let mut typo = k.clone().into_bytes();
                typo[i] = c;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(normalize(&typo), Err(KeyError::Check), "{typo}");
            }
        }
    }

    #[test]
    fn wrong_length_and_foreign_characters_are_caught() {
        assert_eq!(normalize("ABCD-EFGH"), Err(KeyError::Length));
        let mut k = normalize(&key()).expect("valid").into_bytes();
        k[3] = b'U';
        assert_eq!(
            normalize(&String::from_utf8(k).expect("ascii")),
            Err(KeyError::Character)
        );
    }

    #[test]
    fn different_entropy_gives_different_keys_and_digests() {
        let a = format(&[1; 17]);
        let b = format(&[2; 17]);
        assert_ne!(a, b);
        let (na, nb) = (normalize(&a).expect("a"), normalize(&b).expect("b"));
        assert_ne!(digest(&na), digest(&nb));
        assert_eq!(digest(&na).len(), 64);
    }
}
