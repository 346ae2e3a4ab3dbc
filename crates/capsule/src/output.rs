//! Human-readable output: tables, sizes, durations.

use std::io::Write;

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let line = |out: &mut std::io::StdoutLock<'_>, cells: &[String]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{:<w$}  ", cell, w = widths[i]));
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(
        &mut out,
        &header.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    );
    for row in rows {
        line(&mut out, row);
    }
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `2h` or a bare number
/// of seconds, into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (examples: 500ms, 30s, 10m, 2h)"))?;
    let factor = match unit {
        "ms" => 1.0,
        "s" | "sec" => 1000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use ms, s, m, h or d)"
            ));
        }
    };
    let ms = value * factor;
    if !ms.is_finite() || ms < 0.0 || ms > u64::MAX as f64 {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(ms.round() as u64)
}

/// `KEY=VALUE` pairs into a map.
pub fn parse_pairs(
    items: &[String],
    what: &str,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| format!("{what} {item:?} must look like KEY=VALUE"))
        })
        .collect()
}

/// `1.5 KiB` style sizes.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("1.5h"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("45"), Ok(45_000));
        assert!(parse_duration_ms("soon").is_err());
        assert!(
            parse_duration_ms("5w")
                .unwrap_err()
                .contains("unknown unit")
        );
    }

    #[test]
    fn pairs_and_sizes() {
        let m = parse_pairs(&["A=1".into(), "B=x=y".into()], "--env").unwrap();
        assert_eq!(m["B"], "x=y");
        assert!(
            parse_pairs(&["nope".into()], "--env")
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
    }
}
