//! Human formats for sizes, times and modes.

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub use secrate::log::{agree, count};

pub fn mode(kind: char, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(kind);
    for (i, c) in ['r', 'w', 'x', 'r', 'w', 'x', 'r', 'w', 'x']
        .iter()
        .enumerate()
    {
        let bit = 1 << (8 - i);
        s.push(if mode & bit != 0 { *c } else { '-' });
    }
    let mut b: Vec<char> = s.chars().collect();
    if mode & 0o4000 != 0 {
        b[3] = if b[3] == 'x' { 's' } else { 'S' };
    }
    if mode & 0o2000 != 0 {
        b[6] = if b[6] == 'x' { 's' } else { 'S' };
    }
    if mode & 0o1000 != 0 {
        b[9] = if b[9] == 'x' { 't' } else { 'T' };
    }
    b.into_iter().collect()
}

/// `10G`, `512M`, `64k`, `1000` (binary units) → bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 10G or 512M)"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?} is not a size (try 10G or 512M)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// A percentage from 0 to 100 (`--max-unused`), checked when the
/// arguments are read: `forget --prune` refused a bad one only after it
/// had forgotten the snapshots.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse_size("10G"), Ok(10 << 30));
        assert_eq!(super::parse_size("512m"), Ok(512 << 20));
        assert_eq!(super::parse_size("7"), Ok(7));
        assert!(super::parse_size("x").is_err());
        assert!(super::parse_size("5Q").is_err());
        assert_eq!(super::parse_percent("2.5"), Ok(2.5));
        for bad in ["-1", "100.1", "NaN", "inf", "x"] {
            assert!(super::parse_percent(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formats() {
        assert_eq!(super::bytes(10), "10 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::mode('d', 0o755), "drwxr-xr-x");
        assert_eq!(super::mode('-', 0o4755), "-rwsr-xr-x");
        assert_eq!(super::count(1usize, "snapshot"), "1 snapshot");
        assert_eq!(super::count(0usize, "snapshot"), "0 snapshots");
        assert_eq!(super::count(2u64, "entry"), "2 entries");
        assert_eq!(super::count(1u64, "entry"), "1 entry");
        assert_eq!(super::count(3u32, "key"), "3 keys");
        assert_eq!(super::agree(1usize, "is", "are"), "is");
        assert_eq!(super::agree(7usize, "is", "are"), "are");
    }
}
