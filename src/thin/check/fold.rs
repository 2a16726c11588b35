//! The default text form of mapping-tree damage: one line of totals, a
//! line per damaged device (numeric order, the first few key ranges, the
//! mappings lost), and one line for the devices beyond those shown. A
//! truncated file or a torn write damages hundreds of nodes at once; a
//! line each buries the sentence that matters. `-v` prints every node,
//! and `--format json` carries each one with its node path.

use std::collections::BTreeMap;

use crate::pdata::btree::walk::NodeDamage;

/// Damaged nodes listed one per line before the text is folded.
pub const FOLD_ABOVE: usize = 8;
/// Devices given a line of their own; the rest are summed in one line.
const DEVICE_LINES: usize = 6;
/// Key ranges named per device.
const KEY_RANGES: usize = 3;
/// Kinds of damage named in the totals line.
const REASONS: usize = 3;

/// What the mapping counts said about one device.
pub struct Loss {
    /// "" for the live trees, "metadata snapshot " for the snapshot's.
    pub which: &'static str,
    pub device: u64,
    /// E.g. "9669 of 10353 expected mappings are missing".
    pub text: String,
}

#[derive(Default)]
struct DeviceLines {
    nodes: u64,
    keys: Vec<String>,
    loss: Option<String>,
}

/// Splits a walker tree name ("device 3", "metadata snapshot device 3").
fn view_and_device(tree: &str) -> Option<(&'static str, u64)> {
    let (which, rest) = match tree.strip_prefix("metadata snapshot ") {
        Some(rest) => ("metadata snapshot ", rest),
        None => ("", tree),
    };
    Some((which, rest.strip_prefix("device ")?.parse().ok()?))
}

pub fn mapping_damage(damage: &[NodeDamage], losses: &[Loss]) -> Vec<String> {
    let mut devices: BTreeMap<(&'static str, u64), DeviceLines> = BTreeMap::new();
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut other = Vec::new();
    for d in damage {
        *reasons.entry(d.damage.to_string()).or_default() += 1;
        let Some(key) = view_and_device(&d.tree) else {
            other.push(format!("{}: {} at block {}", d.tree, d.damage, d.block()));
            continue;
        };
        let dev = devices.entry(key).or_default();
        dev.nodes += 1;
        dev.keys.push(d.keys.to_string());
    }
    for l in losses {
        devices.entry((l.which, l.device)).or_default().loss = Some(l.text.clone());
    }
    let mut lines = Vec::new();
    if !damage.is_empty() {
        let mut by_count: Vec<(String, u64)> = reasons.into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut why: Vec<String> = by_count
            .iter()
            .take(REASONS)
            .map(|(r, n)| format!("{n} × {r}"))
            .collect();
        if by_count.len() > REASONS {
            let rest: u64 = by_count[REASONS..].iter().map(|(_, n)| n).sum();
            why.push(format!("{rest} of other kinds"));
        }
        let nr_devices = devices.values().filter(|d| d.nodes > 0).count();
        lines.push(format!(
            "{} damaged {} in the mapping trees of {nr_devices} {}: {}",
            damage.len(),
            plural(damage.len() as u64, "node", "nodes"),
            plural(nr_devices as u64, "device", "devices"),
            why.join(", ")
        ));
    }
    lines.extend(other);
    // Live devices first, each view in numeric order.
    let mut ordered: Vec<_> = devices.into_iter().collect();
    ordered.sort_by_key(|((which, id), _)| (!which.is_empty(), *id));
    for ((which, id), d) in ordered.iter().take(DEVICE_LINES) {
        let mut parts = Vec::new();
        if d.nodes > 0 {
            let mut keys = d.keys.clone();
            keys.sort_by_key(|k| range_start(k));
            let shown = keys.iter().take(KEY_RANGES).cloned().collect::<Vec<_>>();
            let more = keys.len().saturating_sub(KEY_RANGES);
            let mut k = format!(
                "{} damaged {}, keys {}",
                d.nodes,
                plural(d.nodes, "node", "nodes"),
                shown.join(", ")
            );
            if more > 0 {
                k.push_str(&format!(" and {more} more"));
            }
            parts.push(k);
        }
        if let Some(loss) = &d.loss {
            parts.push(loss.clone());
        }
        lines.push(format!("  {which}thin device {id}: {}", parts.join("; ")));
    }
    if ordered.len() > DEVICE_LINES {
        let rest = &ordered[DEVICE_LINES..];
        let ids: Vec<String> = rest
            .iter()
            .map(|((which, id), _)| format!("{which}{id}"))
            .collect();
        let nodes: u64 = rest.iter().map(|(_, d)| d.nodes).sum();
        lines.push(format!(
            "  and {} more {} ({}) with {nodes} damaged {}",
            rest.len(),
            plural(rest.len() as u64, "device", "devices"),
            ids.join(", "),
            plural(nodes, "node", "nodes")
        ));
    }
    lines
}

fn plural(n: u64, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// The first key of a "[a..b]" range, for ordering (unbounded first).
fn range_start(keys: &str) -> u64 {
    keys.trim_start_matches('[')
        .split("..")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::BlockError;
    use crate::pdata::btree::walk::{Damage, KeyRange};

    fn node(tree: &str, block: u64, lo: u64) -> NodeDamage {
        NodeDamage {
            tree: tree.into(),
            path: vec![1, block],
            keys: KeyRange {
                lo: Some(lo),
                hi: Some(lo + 10),
            },
            damage: Damage::Block(BlockError::OutOfBounds {
                block,
                nr_blocks: 24,
            }),
        }
    }

    #[test]
    fn devices_fold_in_numeric_order_with_their_losses() {
        let mut damage = Vec::new();
        for dev in [10u64, 2, 1, 3, 4, 5, 6, 7] {
            damage.push(node(&format!("device {dev}"), 30 + dev, dev * 100));
        }
        damage.push(node("device 2", 50, 0));
        damage.push(node("device 2", 51, 500));
        damage.push(node("device 2", 52, 20));
        damage.push(node("metadata snapshot device 9", 60, 0));
        let losses = vec![Loss {
            which: "",
            device: 2,
            text: "30 of 40 expected mappings are missing".into(),
        }];
        let lines = mapping_damage(&damage, &losses);
        let reason = damage[0].damage.to_string();
        assert_eq!(
            lines[0],
            format!("12 damaged nodes in the mapping trees of 9 devices: 12 × {reason}")
        );
        assert_eq!(lines[1], "  thin device 1: 1 damaged node, keys [100..110]");
        assert_eq!(
            lines[2],
            "  thin device 2: 4 damaged nodes, keys [0..10], [20..30], [200..210] and 1 more; \
             30 of 40 expected mappings are missing"
        );
        assert_eq!(lines[6], "  thin device 6: 1 damaged node, keys [600..610]");
        assert_eq!(
            lines[7],
            "  and 3 more devices (7, 10, metadata snapshot 9) with 3 damaged nodes"
        );
        assert_eq!(lines.len(), 8);
    }
}
