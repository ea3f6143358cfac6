//! Who is in a room, with how many connections each. Most rooms have a
//! member or two (a user's own room, a conversation): those keep a short
//! list, sized to what it holds; a room that grows past it gets a map.

use std::collections::HashMap;
use std::sync::Arc;

/// Members a room lists before it maps them.
const FEW: usize = 8;

const _: () = assert!(size_of::<Members>() == 24);

/// The members of a room, by name, with their connections there.
#[derive(Debug)]
pub(super) enum Members {
    /// At most [`FEW`], in the order they came.
    Few(Vec<(Arc<str>, u32)>),
    /// More than that, once. Boxed, so a room of few members holds three words.
    #[expect(clippy::box_collection, reason = "the map's 48 bytes would be in every room")]
    Many(Box<HashMap<Arc<str>, u32>>),
}

impl Default for Members {
    fn default() -> Self {
        Members::Few(Vec::new())
    }
}

impl Members {
    /// One more connection of `member`: how many it now has in the room.
    pub(super) fn add(&mut self, member: &Arc<str>) -> u32 {
        if let Members::Few(few) = self {
            if let Some((_, count)) = few.iter_mut().find(|(name, _)| name == member) {
                *count += 1;
                return *count;
            }
            if few.len() < FEW {
                // A list grows by one: a room of few members keeps no spare room.
                few.reserve_exact(1);
                few.push((member.clone(), 1));
                return 1;
            }
            *self = Members::Many(Box::new(few.drain(..).collect()));
        }
        let Members::Many(many) = self else { unreachable!("a full list became a map") };
        let count = many.entry(member.clone()).or_default();
        *count += 1;
        *count
    }

    /// One connection of `member` left: how many it still has there, or
    /// `None` if it had none. A member with none left is no longer listed.
    pub(super) fn remove(&mut self, member: &str) -> Option<u32> {
        match self {
            Members::Few(few) => {
                let place = few.iter().position(|(name, _)| &**name == member)?;
                few[place].1 -= 1;
                let left = few[place].1;
                if left == 0 {
                    few.swap_remove(place);
                }
                Some(left)
            }
            Members::Many(many) => {
                let count = many.get_mut(member)?;
                *count -= 1;
                let left = *count;
                if left == 0 {
                    many.remove(member);
                }
                Some(left)
            }
        }
    }

    /// How many distinct members.
    pub(super) fn len(&self) -> usize {
        match self {
            Members::Few(few) => few.len(),
            Members::Many(many) => many.len(),
        }
    }

    /// Whether the room has no member.
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each member with its connections, in no set order.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = (&Arc<str>, u32)> + '_> {
        match self {
            Members::Few(few) => Box::new(few.iter().map(|(name, count)| (name, *count))),
            Members::Many(many) => Box::new(many.iter().map(|(name, count)| (name, *count))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_counted_alike_as_a_list_and_as_a_map() {
        let mut members = Members::default();
        let names: Vec<Arc<str>> = (0..20).map(|i| Arc::from(format!("m{i}"))).collect();
        for name in &names {
            assert_eq!(members.add(name), 1);
        }
        assert!(matches!(members, Members::Many(_)), "past {FEW}, a map");
        assert_eq!((members.add(&names[3]), members.len()), (2, 20));
        assert_eq!(members.remove("m3"), Some(1));
        assert_eq!(members.remove("m3"), Some(0));
        assert_eq!((members.remove("m3"), members.remove("nobody")), (None, None));
        assert_eq!(members.len(), 19);
        let connections: u32 = members.iter().map(|(_, count)| count).sum();
        assert_eq!(connections, 19);

        let mut few = Members::default();
        let (alice, bob) = (Arc::from("alice"), Arc::from("bob"));
        assert_eq!((few.add(&alice), few.add(&alice), few.add(&bob)), (1, 2, 1));
        assert_eq!((few.remove("alice"), few.remove("bob"), few.remove("bob")), (Some(1), Some(0), None));
        assert_eq!((few.len(), few.is_empty()), (1, false));
        assert_eq!(few.remove("alice"), Some(0));
        assert!(few.is_empty());
    }
}
