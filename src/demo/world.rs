//! The demo's population: players with hidden traits (how long they stay, how often they play,
//! how much they spend, what they like), the item catalog, and the social graph.

use std::collections::{BTreeSet, HashMap};

use super::rng::Rng;

/// Server regions: the three launch datacenters, then overseas regions that open later.
pub const REGIONS: [&str; 6] = [
    "beijing",
    "shanghai",
    "guangzhou",
    "singapore",
    "tokyo",
    "frankfurt",
];
/// Country of each region.
pub const COUNTRIES: [&str; 6] = ["CN", "CN", "CN", "SG", "JP", "DE"];
/// Days after launch when overseas regions open.
pub const OVERSEAS_LAUNCH_DAY: i64 = 120;
/// Item categories; a player's interest is one of them.
pub const CATEGORIES: [&str; 6] = [
    "skins",
    "weapons",
    "boosts",
    "gacha",
    "battle_pass",
    "currency_pack",
];
/// Game modes, one per item category: the mode a player spends time in reveals the category
/// they buy from (arena players buy weapons), which is what interests are derived from.
pub const GAME_MODES: [&str; 6] = [
    "fashion_show",
    "arena",
    "speedrun",
    "lucky_draw",
    "season_quest",
    "trading",
];
/// Devices and their shares.
pub const DEVICES: [&str; 3] = ["android", "ios", "pc"];

/// One player and the traits that drive their behaviour.
#[derive(Clone, Debug)]
pub struct Player {
    /// 1-based id.
    pub id: i64,
    /// Index into [`REGIONS`].
    pub region: usize,
    /// Index into [`DEVICES`].
    pub device: usize,
    /// Day of signup, counted from the first day of the data.
    pub signup_day: i64,
    /// Seconds after midnight (server time, UTC+8) of the signup.
    pub signup_second: i64,
    /// Last day the player plays (churn), inclusive.
    pub last_day: i64,
    /// Chance to play on a day of their life.
    pub activity: f64,
    /// Spending propensity: 0 for non-payers, heavy-tailed for payers (a few whales).
    pub spend: f64,
    /// Favourite item category (index into [`CATEGORIES`]).
    pub interest: usize,
    /// Community (guild-like group of players who joined together).
    pub community: u64,
}

/// An item of the shop.
#[derive(Clone, Debug)]
pub struct Item {
    /// 1-based id.
    pub id: i32,
    /// Display name.
    pub name: String,
    /// Index into [`CATEGORIES`].
    pub category: usize,
    /// Price in CNY cents.
    pub price_cents: i64,
}

/// Days that bring bursts of signups and play: launch month, National Day week, Spring Festival.
pub fn event_boost(day_of_year: i64, days_since_launch: i64) -> f64 {
    if days_since_launch < 14 {
        2.0
    } else if (273..280).contains(&day_of_year) || (40..47).contains(&day_of_year) {
        1.6
    } else {
        1.0
    }
}

/// Generates `n` players over `days` days.
pub fn players(seed: u64, n: i64, days: i64) -> Vec<Player> {
    let base = Rng::new(seed, "players");
    let communities_per_week = (n / (days / 7).max(1) / 40).max(1);
    (1..=n)
        .map(|id| {
            let mut r = base.fork(id as u64);
            // Signup day: a launch burst, holiday bursts, then a steady trickle.
            let signup_day = match r.weighted(&[0.25, 0.08, 0.67]) {
                0 => r.exponential(10.0).min(60.0) as i64,
                1 => {
                    let year = r.range(0, (days / 365).max(1));
                    (year * 365 + if r.chance(0.5) { 273 } else { 40 } + r.range(0, 7))
                        .min(days - 1)
                }
                _ => r.range(0, days),
            };
            let region = if signup_day >= OVERSEAS_LAUNCH_DAY && r.chance(0.15) {
                3 + r.weighted(&[0.5, 0.3, 0.2])
            } else {
                r.weighted(&[0.40, 0.33, 0.27])
            };
            // Lifetime: many leave on day one, some stay weeks, a core stays for years.
            let lifetime = match r.weighted(&[0.35, 0.30, 0.20, 0.15]) {
                0 => 0.0,
                1 => r.exponential(4.0),
                2 => r.exponential(35.0),
                _ => r.exponential(300.0),
            } as i64;
            let last_day = (signup_day + lifetime).min(days - 1);
            let activity = if lifetime > 60 {
                0.25 + 0.5 * r.unit()
            } else {
                0.35 + 0.5 * r.unit()
            };
            let spend = if r.chance(0.12 + 0.1 * (lifetime.min(300) as f64 / 300.0)) {
                r.pareto(1.3)
            } else {
                0.0
            };
            let community = ((region as u64) << 40)
                | ((signup_day as u64 / 7) << 16)
                | r.range(0, communities_per_week) as u64;
            // Communities share a taste: most members like the community's category.
            let shared =
                (community.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % CATEGORIES.len();
            let interest = if r.chance(0.6) {
                shared
            } else {
                r.weighted(&[3.0, 3.0, 2.0, 2.0, 1.5, 1.0])
            };
            Player {
                id,
                region,
                device: r.weighted(&[0.55, 0.35, 0.10]),
                signup_day,
                signup_second: diurnal_second(&mut r),
                last_day,
                activity,
                spend,
                interest,
                community,
            }
        })
        .collect()
}

/// A second of the day (server time) following the players' daily rhythm: quiet at night,
/// a lunch bump, a peak in the evening.
pub fn diurnal_second(r: &mut Rng) -> i64 {
    const HOURS: [f64; 24] = [
        2.0, 1.2, 0.7, 0.4, 0.3, 0.3, 0.5, 1.0, 1.6, 2.0, 2.4, 2.8, 3.6, 3.2, 2.6, 2.6, 2.8, 3.2,
        4.0, 5.0, 6.0, 6.4, 5.6, 3.6,
    ];
    r.weighted(&HOURS) as i64 * 3600 + r.range(0, 3600)
}

/// The shop: a fixed catalog (it does not grow with the scale).
pub fn items(seed: u64) -> Vec<Item> {
    let mut r = Rng::new(seed, "items");
    let mut out = Vec::new();
    for (category, name) in CATEGORIES.iter().enumerate() {
        for k in 1..=30 {
            let base_yuan = match category {
                4 => 68.0,
                5 => [6.0, 30.0, 68.0, 128.0, 328.0, 648.0][k % 6],
                _ => r.lognormal(25.0, 0.9).clamp(1.0, 648.0),
            };
            out.push(Item {
                id: out.len() as i32 + 1,
                name: format!("{name}-{k:02}"),
                category,
                price_cents: (base_yuan * 100.0).round() as i64,
            });
        }
    }
    out
}

/// The social graph: skewed degrees (larger for players who stay longer), mostly within
/// communities, and a share of friendships made through a friend (a friend's friend: what
/// makes mutual friends predict new ones); each pair once, `a < b`, with the day the
/// friendship started (one made through a friend starts after the two it was made through).
pub fn friendships(seed: u64, players: &[Player]) -> Vec<(i64, i64, i64)> {
    let base = Rng::new(seed, "friendships");
    let mut by_community: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, p) in players.iter().enumerate() {
        by_community.entry(p.community).or_default().push(i);
    }
    // Pairs of indexes in the order made, each with the friend it was made through.
    let mut made: Vec<((usize, usize), Option<usize>)> = Vec::new();
    let mut pairs = BTreeSet::new();
    let mut friends: Vec<Vec<usize>> = vec![Vec::new(); players.len()];
    for (i, p) in players.iter().enumerate() {
        let mut r = base.fork(p.id as u64);
        // Players who stay longer make more friends.
        let stay = (1.0 + (p.last_day - p.signup_day) as f64 / 60.0).min(6.0);
        let degree = (r.pareto(1.4) * 1.5 * stay) as usize;
        let members = &by_community[&p.community];
        for _ in 0..degree.min(100) {
            let (j, via) = if !friends[i].is_empty() && r.chance(0.3) {
                let f = friends[i][r.range(0, friends[i].len() as i64) as usize];
                (
                    friends[f][r.range(0, friends[f].len() as i64) as usize],
                    Some(f),
                )
            } else if r.chance(0.8) && members.len() > 1 {
                (members[r.range(0, members.len() as i64) as usize], None)
            } else {
                (r.range(0, players.len() as i64) as usize, None)
            };
            if j != i && pairs.insert((i.min(j), i.max(j))) {
                friends[i].push(j);
                friends[j].push(i);
                made.push(((i.min(j), i.max(j)), via));
            }
        }
    }
    let mut since: HashMap<(usize, usize), i64> = HashMap::with_capacity(made.len());
    for &((a, b), via) in &made {
        let (pa, pb) = (&players[a], &players[b]);
        let mut start = pa.signup_day.max(pb.signup_day);
        if let Some(f) = via {
            let day = |x: usize| since.get(&(x.min(f), x.max(f))).copied().unwrap_or(start);
            start = start.max(day(a)).max(day(b));
        }
        let mut r = base.fork(((pa.id as u64) << 32) | pb.id as u64);
        let end = pa.last_day.min(pb.last_day).max(start);
        since.insert((a, b), (start + r.exponential(5.0) as i64).min(end));
    }
    pairs
        .into_iter()
        .map(|(a, b)| (players[a].id, players[b].id, since[&(a, b)]))
        .collect()
}
