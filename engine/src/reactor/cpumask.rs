//! Parsing SPDK-style cpumasks: hex masks (`0x3`, `3`) and core lists (`[0,2-3]`).

/// A cpumask that could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuMaskError {
    /// Not hex and not a list.
    #[error("invalid cpumask '{0}': use a hex mask such as 0x3 or a list such as [0,2-3]")]
    Invalid(String),
    /// Parsed, but selects no core.
    #[error("cpumask '{0}' selects no core")]
    Empty(String),
}

/// Parses a cpumask into a sorted list of core ids.
pub fn parse_cpumask(mask: &str) -> Result<Vec<u32>, CpuMaskError> {
    let m = mask.trim();
    let invalid = || CpuMaskError::Invalid(mask.to_string());
    let mut cores = Vec::new();
    if let Some(list) = m.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('-') {
                Some((a, b)) => {
                    let a: u32 = a.trim().parse().map_err(|_| invalid())?;
                    let b: u32 = b.trim().parse().map_err(|_| invalid())?;
                    if a > b || b >= 1024 {
                        return Err(invalid());
                    }
                    cores.extend(a..=b);
                }
                None => {
                    let c: u32 = part.parse().map_err(|_| invalid())?;
                    if c >= 1024 {
                        return Err(invalid());
                    }
                    cores.push(c);
                }
            }
        }
    } else {
        let hex = m
            .strip_prefix("0x")
            .or_else(|| m.strip_prefix("0X"))
            .unwrap_or(m);
        if hex.is_empty() || hex.len() > 256 {
            return Err(invalid());
        }
        for (i, ch) in hex.chars().rev().enumerate() {
            let nibble = ch.to_digit(16).ok_or_else(invalid)?;
            for bit in 0..4 {
                if nibble & (1 << bit) != 0 {
                    cores.push((i * 4 + bit) as u32);
                }
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(CpuMaskError::Empty(mask.to_string()));
    }
    Ok(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_lists() {
        assert_eq!(parse_cpumask("0x1").unwrap(), vec![0]);
        assert_eq!(parse_cpumask("3").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpumask("0x12").unwrap(), vec![1, 4]);
        assert_eq!(parse_cpumask("[0,2-3]").unwrap(), vec![0, 2, 3]);
        assert!(matches!(parse_cpumask("0x0"), Err(CpuMaskError::Empty(_))));
        assert!(matches!(parse_cpumask("zz"), Err(CpuMaskError::Invalid(_))));
        assert!(matches!(
            parse_cpumask("[3-1]"),
            Err(CpuMaskError::Invalid(_))
        ));
    }
}
