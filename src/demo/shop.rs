//! What a player buys, so that what they did before tells what they buy next (recommendations
//! have something to find): often an item a friend bought lately (friends' purchases spread),
//! else mostly one from their favourite category; within a category the popular items sell
//! more, and whales lean to the expensive end.

use super::rng::Rng;
use super::world::{CATEGORIES, Item, Player};

/// The chance that a purchase copies one a friend made in the last [`FRIEND_DAYS`] days.
const FRIEND_SHARE: f64 = 0.3;
/// How recent a friend's purchase must be to spread.
const FRIEND_DAYS: i64 = 30;
/// The chance that a purchase is from the player's favourite category (else any category).
const INTEREST_SHARE: f64 = 0.7;
/// How steeply sales fall from a category's best seller to its last item: the item of rank k
/// (from 0) sells in proportion to `1 / (k + 1)^POPULARITY_SKEW`.
const POPULARITY_SKEW: f64 = 0.6;

/// The shop's choices, and what each player's friends bought lately.
pub struct Shop<'a> {
    by_category: Vec<Vec<&'a Item>>,
    /// Sales weight of each rank within a category.
    popularity: Vec<f64>,
    /// Per player index: each friend's index and the day they became friends.
    friends: Vec<Vec<(usize, i64)>>,
    /// Per player index: their last purchase (the item and the day), if any.
    last_bought: Vec<Option<(&'a Item, i64)>>,
}

impl<'a> Shop<'a> {
    /// The shop of `items` for `players` (ids 1..=n, in order) and their friendships
    /// `(a, b, since_day)`.
    pub fn new(players: &[Player], items: &'a [Item], pairs: &[(i64, i64, i64)]) -> Self {
        let mut by_category: Vec<Vec<&Item>> = vec![Vec::new(); CATEGORIES.len()];
        for item in items {
            by_category[item.category].push(item);
        }
        let per_category = by_category.iter().map(Vec::len).max().unwrap_or(0);
        let mut friends = vec![Vec::new(); players.len()];
        for &(a, b, since) in pairs {
            let (a, b) = (a as usize - 1, b as usize - 1);
            friends[a].push((b, since));
            friends[b].push((a, since));
        }
        Self {
            by_category,
            popularity: (0..per_category)
                .map(|k| 1.0 / ((k + 1) as f64).powf(POPULARITY_SKEW))
                .collect(),
            friends,
            last_bought: vec![None; players.len()],
        }
    }

    /// The item player `i` buys on `day`, drawn from `r`; remembered as their last purchase.
    pub fn choose(&mut self, r: &mut Rng, i: usize, p: &Player, day: i64) -> &'a Item {
        let from_friend = if r.chance(FRIEND_SHARE) {
            self.friends[i]
                .iter()
                .filter(|&&(_, since)| since <= day)
                .filter_map(|&(f, _)| self.last_bought[f])
                .filter(|&(_, bought)| day - bought <= FRIEND_DAYS)
                .max_by_key(|&(item, bought)| (bought, -item.id))
                .map(|(item, _)| item)
        } else {
            None
        };
        let item = match from_friend {
            Some(item) => item,
            None => {
                let category = if r.chance(INTEREST_SHARE) {
                    p.interest
                } else {
                    r.range(0, CATEGORIES.len() as i64) as usize
                };
                let choices = &self.by_category[category];
                let k = if p.spend > 8.0 {
                    choices.len() - 1 - r.range(0, 5) as usize
                } else {
                    r.weighted(&self.popularity[..choices.len()])
                };
                choices[k.min(choices.len() - 1)]
            }
        };
        self.last_bought[i] = Some((item, day));
        item
    }
}
