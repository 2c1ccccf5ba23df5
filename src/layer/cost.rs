//! What each entry of a written layer costs compressed, for
//! `--max-layer-size`, which registries check against a layer's compressed
//! size.
//!
//! A compressor's output cannot be cut at an entry's edge, so the cost of
//! an entry is read off a *profile*: points (uncompressed offset,
//! compressed offset) the stream is known to pass through. Our gzip writes
//! independent members of fixed input length, so its profile is exact at
//! every member's end; zstd's is sampled at each entry's start, and lags by
//! what its workers still hold. Between two points the cost is spread
//! evenly. The costs of a run of entries then sum to the compressed bytes
//! between its ends, up to a member's worth at each end: close enough to
//! cut a layer, which is then measured again once written.

/// Points a compressed stream passes through, in increasing order, from
/// (0, 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    points: Vec<(u64, u64)>,
}

impl Profile {
    /// Records that `uncompressed` input bytes had become `compressed`
    /// output bytes. Points out of order are ignored.
    pub(crate) fn pass(&mut self, uncompressed: u64, compressed: u64) {
        let last = self.points.last().copied().unwrap_or((0, 0));
        if uncompressed >= last.0 && compressed >= last.1 && (uncompressed, compressed) != last {
            self.points.push((uncompressed, compressed));
        }
    }

    /// The compressed offset at `uncompressed`, between the points around
    /// it (past the last point: the last point's).
    fn at(&self, uncompressed: u64) -> u64 {
        let after = self.points.partition_point(|p| p.0 < uncompressed);
        let before = if after == 0 {
            (0, 0)
        } else {
            self.points[after - 1]
        };
        let Some(&next) = self.points.get(after) else {
            return before.1;
        };
        let span = next.0 - before.0;
        if span == 0 {
            return next.1;
        }
        let into = u128::from(uncompressed - before.0);
        before.1 + (u128::from(next.1 - before.1) * into / u128::from(span)) as u64
    }

    /// What each entry costs compressed, given where each starts in the
    /// uncompressed stream (in order) and where the stream ends: the last
    /// entry carries the archive's end.
    pub(crate) fn costs(&self, starts: &[u64], end: u64) -> Vec<u64> {
        let ends = starts.iter().skip(1).copied().chain([end]);
        starts
            .iter()
            .zip(ends)
            .map(|(&start, end)| self.at(end.max(start)) - self.at(start))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_points_and_sum_to_the_stream() {
        let mut profile = Profile::default();
        // Two members: 1000 bytes into 100, then 1000 into 900.
        profile.pass(1000, 100);
        profile.pass(2000, 1000);
        let costs = profile.costs(&[0, 500, 1000, 1500], 2000);
        assert_eq!(costs, vec![50, 50, 450, 450]);
        assert_eq!(costs.iter().sum::<u64>(), 1000);
        // An entry across the members' edge takes from both.
        assert_eq!(profile.costs(&[900, 1100], 1200), vec![10 + 90, 90]);
        // Entries without content cost nothing; a stream past its last
        // point (gzip's end still in flight) costs what was seen.
        assert_eq!(profile.costs(&[10, 10, 20], 3000), vec![0, 1, 998]);
    }

    #[test]
    fn points_out_of_order_are_ignored() {
        let mut profile = Profile::default();
        profile.pass(100, 50);
        profile.pass(90, 60);
        profile.pass(200, 40);
        profile.pass(200, 100);
        assert_eq!(profile.points, vec![(100, 50), (200, 100)]);
    }
}
