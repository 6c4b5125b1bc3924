//! Account handles (mobile, email), passwords and real-name id numbers: validation and the
//! masked forms every response shows (DOMAIN.md: `张*`, `1101**********1234`).

/// A field that failed validation and why; becomes a 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// JSON field name.
    pub field: &'static str,
    /// What is wrong, for humans.
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// Mobile numbers: digits with an optional leading `+`, 6 to 20 characters; spaces and dashes
/// are dropped.
pub fn normalize_mobile(raw: &str) -> Result<String, Invalid> {
    let m: String = raw.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = m.strip_prefix('+').unwrap_or(&m);
    if !(6..=20).contains(&m.len())
        || digits.is_empty()
        || !digits.chars().all(|c| c.is_ascii_digit())
    {
        return Err(invalid(
            "mobile",
            "must be 6 to 20 digits, optionally starting with +",
        ));
    }
    Ok(m)
}

/// Emails: trimmed, lower-cased, one `@` with something on both sides and a dot in the domain.
pub fn normalize_email(raw: &str) -> Result<String, Invalid> {
    let e = raw.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        })
        && !e.chars().any(char::is_whitespace);
    if !ok {
        return Err(invalid("email", "is not an email address"));
    }
    Ok(e)
}

/// Passwords: 8 to 128 characters.
pub fn check_password(password: &str) -> Result<(), Invalid> {
    let n = password.chars().count();
    if !(8..=128).contains(&n) {
        return Err(invalid("password", "must be 8 to 128 characters"));
    }
    Ok(())
}

/// Longest display name, in characters: enough for any real name, and a bound on what one
/// account stores and every page shows.
pub const MAX_DISPLAY_NAME: usize = 64;

/// Display names: at most [`MAX_DISPLAY_NAME`] characters, trimmed.
pub fn check_display_name(name: &str) -> Result<&str, Invalid> {
    let name = name.trim();
    if name.chars().count() > MAX_DISPLAY_NAME {
        return Err(invalid("display_name", "must be at most 64 characters"));
    }
    Ok(name)
}

/// Kinds of identity document a ticket buyer may present.
pub const ID_TYPES: [&str; 4] = ["id_card", "passport", "hk_macau_permit", "taiwan_permit"];

/// The form of an id number that names a person: without whitespace, upper-cased — so
/// `" a1234567"` and `"A1234567"` are one person (the person hash is computed over this form).
pub fn canonical_id_number(raw: &str) -> String {
    raw.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_uppercase()
}

/// Checks a real-name id number for its type; returns it upper-cased without spaces.
pub fn normalize_id_number(id_type: &str, raw: &str) -> Result<String, Invalid> {
    let n = canonical_id_number(raw);
    let valid = match id_type {
        "id_card" => return check_resident_id(&n).map(|_| n),
        "passport" => (5..=20).contains(&n.len()) && n.chars().all(|c| c.is_ascii_alphanumeric()),
        "hk_macau_permit" => {
            matches!(n.chars().next(), Some('H' | 'M'))
                && matches!(n.len(), 9 | 11)
                && n[1..].chars().all(|c| c.is_ascii_digit())
        }
        "taiwan_permit" => matches!(n.len(), 8 | 10) && n.chars().all(|c| c.is_ascii_digit()),
        _ => {
            return Err(invalid(
                "id_type",
                format!("must be one of {}", ID_TYPES.join(", ")),
            ));
        }
    };
    if !valid {
        return Err(invalid(
            "id_number",
            format!("is not a valid {id_type} number"),
        ));
    }
    Ok(n)
}

/// Mainland resident id (GB 11643-1999): 17 digits and a check character (ISO 7064 MOD 11-2).
fn check_resident_id(n: &str) -> Result<(), Invalid> {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let chars: Vec<char> = n.chars().collect();
    if chars.len() != 18 || !chars[..17].iter().all(|c| c.is_ascii_digit()) {
        return Err(invalid(
            "id_number",
            "an id_card number has 17 digits and a check character",
        ));
    }
    let sum: u32 = chars[..17]
        .iter()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap_or(0) * w)
        .sum();
    if CHECK[(sum % 11) as usize] != chars[17] {
        return Err(invalid(
            "id_number",
            "the id_card check character does not match",
        ));
    }
    Ok(())
}

/// `张三` → `张*`, `Alice` → `A****`: the first character, the rest starred.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    chars.next().map_or(String::new(), |first| {
        std::iter::once(first).chain(chars.map(|_| '*')).collect()
    })
}

/// Keeps `keep` characters at each end and stars the middle; short values keep less so that
/// at least half is always hidden.
fn mask_middle(value: &str, keep: usize) -> String {
    let chars: Vec<char> = value.chars().collect();
    let keep = keep.min(chars.len() / 4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < keep || i >= chars.len() - keep {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// `110101199003071234` → `1101**********1234`.
pub fn mask_id_number(id_number: &str) -> String {
    mask_middle(id_number, 4)
}

/// `13812345678` → `138****5678`.
pub fn mask_mobile(mobile: &str) -> String {
    let chars: Vec<char> = mobile.chars().collect();
    if chars.len() < 8 {
        return mask_middle(mobile, 2);
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 3 || i >= chars.len() - 4 {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// `alice@example.com` → `a***@example.com`.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => mask_middle(email, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_ids_are_checked_with_their_check_character() {
        assert_eq!(
            normalize_id_number("id_card", "11010519491231002x"),
            Ok("11010519491231002X".into())
        );
        let wrong = normalize_id_number("id_card", "110105194912310021").unwrap_err();
        assert_eq!(wrong.field, "id_number");
        assert!(normalize_id_number("id_card", "12345").is_err());
    }

    #[test]
    fn other_documents_have_their_own_shapes() {
        assert!(normalize_id_number("passport", "E12345678").is_ok());
        assert!(normalize_id_number("passport", "E1-2").is_err());
        assert!(normalize_id_number("hk_macau_permit", "H12345678").is_ok());
        assert!(normalize_id_number("hk_macau_permit", "X12345678").is_err());
        assert!(normalize_id_number("taiwan_permit", "12345678").is_ok());
        assert_eq!(
            normalize_id_number("visa", "1").unwrap_err().field,
            "id_type"
        );
    }

    #[test]
    fn masks_hide_the_middle() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("Alice"), "A****");
        assert_eq!(mask_id_number("110101199003071234"), "1101**********1234");
        assert_eq!(mask_id_number("E12345678"), "E1*****78");
        assert_eq!(mask_mobile("13812345678"), "138****5678");
        assert_eq!(mask_email("alice@example.com"), "a***@example.com");
    }

    #[test]
    fn handles_are_normalized_or_refused_naming_the_field() {
        assert_eq!(
            normalize_email(" Bob@Example.COM "),
            Ok("bob@example.com".into())
        );
        assert_eq!(normalize_email("bob@").unwrap_err().field, "email");
        assert_eq!(
            normalize_mobile("+86 138-1234-5678"),
            Ok("+8613812345678".into())
        );
        assert_eq!(normalize_mobile("12ab").unwrap_err().field, "mobile");
        assert_eq!(check_password("short").unwrap_err().field, "password");
    }
}
