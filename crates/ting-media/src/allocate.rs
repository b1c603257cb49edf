//! Spending one subscriber's downlink on its video slots.
//!
//! Every video slot a subscriber has wants a simulcast layer: the one its tile size calls
//! for (its *preferred* layer). A subscriber's bandwidth estimate may not pay for all of
//! them. [`allocate`] decides, in strict order of importance:
//!
//! 1. audio is paid for first and never cut (it is cheap and it is the meeting);
//! 2. *stage* slots (a screen share, the large speaker tile) get the best layer up to
//!    their preferred one that fits, one after the other;
//! 3. the other slots (thumbnails) get their lowest layer, in layout order, as long as it
//!    fits; those that do not fit are paused;
//! 4. what is left raises thumbnails a layer at a time, in layout order, toward their
//!    preferred layer.
//!
//! So when the estimate falls, the last thumbnails pause first, then thumbnails drop to
//! their lowest layer, and only then does the speaker's layer go down.
//!
//! Hysteresis: a layer above what a slot gets now must fit with a margin
//! ([`AllocInput::up_margin`]), and the caller can forbid upgrades altogether for a while
//! after a downgrade. Keeping what a slot has needs no margin. A pure function of its
//! inputs, so it is tested without a router.

/// One video slot as the allocator sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocSlot {
    /// Served before every non-stage slot (screen shares, the large tile).
    pub stage: bool,
    /// The layer the tile size calls for.
    pub preferred: u8,
    /// The layer the slot gets now (what "keeping" means); `None` when paused or new.
    pub current: Option<u8>,
    /// What each layer costs in bits per second; `None` for a layer that cannot be had
    /// (the publisher has no such layer, or it failed to start).
    pub cost: [Option<u64>; 3],
}

/// Everything [`allocate`] needs besides the slots.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocInput {
    /// The subscriber's estimated downlink in bits per second; `None`: unknown, spend
    /// freely (everyone gets their preferred layer).
    pub budget: Option<u64>,
    /// What the audio slots cost, paid before any video.
    pub audio: u64,
    /// An upgrade must fit `cost * up_margin` (for example 1.15).
    pub up_margin: f64,
    /// Whether anything may get a layer above its current one (or start from paused).
    pub allow_up: bool,
}

/// The layer each slot should get, in the order of `slots`; `None` pauses the slot.
pub fn allocate(input: &AllocInput, slots: &[AllocSlot], out: &mut Vec<Option<u8>>) {
    out.clear();
    out.resize(slots.len(), None);
    let Some(budget) = input.budget else {
        for (o, s) in out.iter_mut().zip(slots) {
            *o = best_at_most(s, s.preferred).or_else(|| lowest(s));
        }
        return;
    };
    let mut left = budget.saturating_sub(input.audio) as f64;
    // The price of giving `s` layer `l` on top of what it has in `out` now.
    let price = |s: &AllocSlot, have: Option<u8>, l: u8| -> Option<f64> {
        let cost = s.cost[usize::from(l)]? as f64;
        let had = have.and_then(|h| s.cost[usize::from(h)]).unwrap_or(0) as f64;
        let up = s.current.is_none_or(|c| l > c);
        if up && !input.allow_up {
            return None;
        }
        let margin = if up { input.up_margin } else { 1.0 };
        Some(cost * margin - had)
    };
    // 2. Stage slots: the best that fits, in order.
    for (i, s) in slots.iter().enumerate().filter(|(_, s)| s.stage) {
        for l in (0..=s.preferred.min(2)).rev() {
            if let Some(p) = price(s, None, l)
                && p <= left
            {
                out[i] = Some(l);
                left -= s.cost[usize::from(l)].unwrap_or(0) as f64;
                break;
            }
        }
    }
    // 3. Thumbnails: their lowest layer, while it fits.
    for (i, s) in slots.iter().enumerate().filter(|(_, s)| !s.stage) {
        let Some(l) = lowest(s) else { continue };
        if let Some(p) = price(s, None, l)
            && p <= left
        {
            out[i] = Some(l);
            left -= s.cost[usize::from(l)].unwrap_or(0) as f64;
        }
    }
    // 4. Raise thumbnails a layer at a time, in order, while anything fits.
    loop {
        let mut raised = false;
        for (i, s) in slots.iter().enumerate().filter(|(_, s)| !s.stage) {
            let Some(have) = out[i] else { continue };
            let Some(next) =
                (have + 1..=s.preferred.min(2)).find(|l| s.cost[usize::from(*l)].is_some())
            else {
                continue;
            };
            if let Some(p) = price(s, Some(have), next)
                && p <= left
            {
                let step = s.cost[usize::from(next)].unwrap_or(0) as f64
                    - s.cost[usize::from(have)].unwrap_or(0) as f64;
                left -= step.max(0.0);
                out[i] = Some(next);
                raised = true;
            }
        }
        if !raised {
            break;
        }
    }
}

/// The best available layer at or below `max`.
fn best_at_most(s: &AllocSlot, max: u8) -> Option<u8> {
    (0..=max.min(2))
        .rev()
        .find(|l| s.cost[usize::from(*l)].is_some())
}

/// The lowest available layer.
fn lowest(s: &AllocSlot) -> Option<u8> {
    (0..3u8).find(|l| s.cost[usize::from(*l)].is_some())
}

/// What a slot showing `preferred` at most costs with unlimited bandwidth: the sum the
/// caller asks the bandwidth estimator to probe for.
pub fn desired(slots: &[AllocSlot], audio: u64) -> u64 {
    audio
        + slots
            .iter()
            .filter_map(|s| {
                best_at_most(s, s.preferred)
                    .or_else(|| lowest(s))
                    .and_then(|l| s.cost[usize::from(l)])
            })
            .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMULCAST: [Option<u64>; 3] = [Some(150_000), Some(500_000), Some(1_500_000)];

    fn speaker() -> AllocSlot {
        AllocSlot {
            stage: true,
            preferred: 2,
            current: Some(2),
            cost: SIMULCAST,
        }
    }

    fn thumb() -> AllocSlot {
        AllocSlot {
            stage: false,
            preferred: 0,
            current: Some(0),
            cost: SIMULCAST,
        }
    }

    fn input(budget: Option<u64>) -> AllocInput {
        AllocInput {
            budget,
            audio: 150_000,
            up_margin: 1.15,
            allow_up: true,
        }
    }

    fn run(input: &AllocInput, slots: &[AllocSlot]) -> Vec<Option<u8>> {
        let mut out = Vec::new();
        allocate(input, slots, &mut out);
        out
    }

    fn layout() -> Vec<AllocSlot> {
        let mut s = vec![speaker()];
        s.extend(std::iter::repeat_n(thumb(), 9));
        s
    }

    #[test]
    fn plenty_gives_everyone_their_preferred_layer() {
        let s = layout();
        assert_eq!(run(&input(None), &s)[..3], [Some(2), Some(0), Some(0)]);
        let out = run(&input(Some(10_000_000)), &s);
        assert_eq!(out[0], Some(2));
        assert!(out[1..].iter().all(|l| *l == Some(0)));
    }

    #[test]
    fn a_falling_estimate_cuts_thumbnails_before_the_speaker() {
        let s = layout();
        // Audio 150 k + speaker 1.5 M + 9 x 150 k = 3.0 M. At 2.2 M: the speaker keeps
        // its layer; three thumbnails fit.
        let out = run(&input(Some(2_200_000)), &s);
        assert_eq!(out[0], Some(2));
        assert_eq!(out[1..].iter().filter(|l| l.is_some()).count(), 3);
        assert!(
            out[1..4].iter().all(|l| *l == Some(0)),
            "layout order: first tiles first"
        );
        assert!(out[4..].iter().all(|l| l.is_none()));
        // At 1.5 M the speaker no longer fits at the top layer: it drops to the middle
        // one; 850 k is left for five thumbnails.
        let out = run(&input(Some(1_500_000)), &s);
        assert_eq!(out[0], Some(1));
        assert_eq!(out[1..].iter().filter(|l| l.is_some()).count(), 5);
        // At 300 k only audio and the speaker's lowest layer.
        let out = run(&input(Some(300_000)), &s);
        assert_eq!(out[0], Some(0));
        assert!(out[1..].iter().all(|l| l.is_none()));
        // Below what audio costs: no video at all, audio is never cut (not our call).
        let out = run(&input(Some(100_000)), &s);
        assert!(out.iter().all(|l| l.is_none()));
    }

    #[test]
    fn upgrades_need_a_margin_and_permission() {
        let mut s = vec![speaker()];
        s[0].current = Some(1);
        // 150 k audio + 1.5 M top layer = 1.65 M; with a 15 % margin the top layer needs
        // 150 k + 1.725 M.
        assert_eq!(run(&input(Some(1_700_000)), &s), [Some(1)]);
        assert_eq!(run(&input(Some(1_900_000)), &s), [Some(2)]);
        let mut no_up = input(Some(10_000_000));
        no_up.allow_up = false;
        assert_eq!(run(&no_up, &s), [Some(1)]);
        // Keeping the current layer needs no margin.
        s[0].current = Some(2);
        assert_eq!(run(&input(Some(1_650_000)), &s), [Some(2)]);
        // A paused thumbnail does not come back while upgrades are held.
        let mut t = thumb();
        t.current = None;
        assert_eq!(run(&no_up, &[t]), [None]);
    }

    #[test]
    fn thumbnails_rise_in_turn_toward_their_preferred_layer() {
        let mut s: Vec<AllocSlot> = (0..4).map(|_| thumb()).collect();
        for t in &mut s {
            t.preferred = 2;
        }
        // 150 k audio + 4 x 150 k; a step to the middle layer must fit 500 k x 1.15 less the
        // 150 k the slot has: 425 k. Two steps fit.
        let out = run(&input(Some(150_000 + 600_000 + 2 * 425_000 + 10)), &s);
        assert_eq!(out, [Some(1), Some(1), Some(0), Some(0)]);
    }

    #[test]
    fn missing_layers_are_skipped() {
        let mut screen = speaker();
        screen.cost = [Some(1_200_000), None, None];
        screen.current = None;
        assert_eq!(run(&input(None), &[screen]), [Some(0)]);
        assert_eq!(run(&input(Some(1_600_000)), &[screen]), [Some(0)]);
        assert_eq!(run(&input(Some(1_000_000)), &[screen]), [None]);
        let mut top_only = thumb();
        top_only.cost = [None, None, Some(900_000)];
        assert_eq!(
            run(&input(None), &[top_only]),
            [Some(2)],
            "lowest available, above preferred"
        );
        assert_eq!(
            desired(&[speaker(), thumb(), top_only], 100),
            100 + 1_500_000 + 150_000 + 900_000
        );
    }
}
