//! A bounded, downsampled series: however long the history, at most `capacity` buckets, each
//! holding the min, max, mean and last of consecutive points, so plots keep spikes and dips while
//! memory stays fixed.
//!
//! Points are appended into buckets of `width` points; when all `capacity` buckets are full,
//! neighbours are merged pairwise (min of mins, max of maxes, summed sums and counts) and `width`
//! doubles. So a series of n points holds between `capacity / 2` and `capacity` buckets of
//! `width = 2^k ≥ n / capacity` points each, and appending is amortised O(1).

use serde::Serialize;

/// Consecutive points of a [`Series`], summarised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    /// x of the first point (a round number or Unix seconds).
    pub x_start: f64,
    /// x of the last point.
    pub x_end: f64,
    /// Smallest finite value (NaN when the bucket holds no finite value).
    pub min: f64,
    /// Largest finite value (NaN when the bucket holds no finite value).
    pub max: f64,
    /// Sum of the finite values.
    pub sum: f64,
    /// Finite values.
    pub count: u32,
    /// Non-finite values (NaN, ±∞): kept apart so one NaN never hides the rest of the bucket.
    pub non_finite: u32,
    /// Points (finite or not) in the bucket.
    pub points: u32,
    /// Last finite value.
    pub last: f64,
}

impl Bucket {
    fn new(x: f64, v: f64) -> Self {
        let mut b = Self {
            x_start: x,
            x_end: x,
            min: f64::NAN,
            max: f64::NAN,
            sum: 0.0,
            count: 0,
            non_finite: 0,
            points: 0,
            last: f64::NAN,
        };
        b.add(x, v);
        b
    }

    #[inline]
    fn add(&mut self, x: f64, v: f64) {
        self.x_end = x;
        self.points += 1;
        if v.is_finite() {
            self.min = if self.count == 0 { v } else { self.min.min(v) };
            self.max = if self.count == 0 { v } else { self.max.max(v) };
            self.sum += v;
            self.count += 1;
            self.last = v;
        } else {
            self.non_finite += 1;
        }
    }

    fn merge(a: &Bucket, b: &Bucket) -> Bucket {
        let (min, max) = match (a.count, b.count) {
            (0, _) => (b.min, b.max),
            (_, 0) => (a.min, a.max),
            _ => (a.min.min(b.min), a.max.max(b.max)),
        };
        Bucket {
            x_start: a.x_start,
            x_end: b.x_end,
            min,
            max,
            sum: a.sum + b.sum,
            count: a.count + b.count,
            non_finite: a.non_finite + b.non_finite,
            points: a.points + b.points,
            last: if b.count > 0 { b.last } else { a.last },
        }
    }

    /// Mean of the finite values; `None` when there are none.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / f64::from(self.count))
    }

    /// Middle of the bucket's x span.
    pub fn x_mid(&self) -> f64 {
        (self.x_start + self.x_end) / 2.0
    }
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    buckets: Vec<Bucket>,
    width: u32,
    capacity: usize,
    total: u64,
}

impl Series {
    /// An empty series keeping at most `capacity` (≥ 2, rounded up to even) buckets.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2).next_multiple_of(2);
        Self {
            buckets: Vec::new(),
            width: 1,
            capacity,
            total: 0,
        }
    }

    /// Appends a point; non-finite values are counted in their bucket, not averaged.
    /// Points are expected in increasing x.
    #[inline]
    pub fn push(&mut self, x: f64, value: f64) {
        self.total += 1;
        if let Some(last) = self.buckets.last_mut()
            && last.points < self.width
        {
            last.add(x, value);
            return;
        }
        self.push_bucket(x, value);
    }

    /// Starts a bucket, halving the series first when it is full.
    #[inline(never)]
    fn push_bucket(&mut self, x: f64, value: f64) {
        if self.buckets.len() == self.capacity {
            self.halve();
        }
        if self.buckets.capacity() == 0 {
            self.buckets.reserve_exact(self.capacity.min(64));
        }
        self.buckets.push(Bucket::new(x, value));
    }

    fn halve(&mut self) {
        let merged: Vec<Bucket> = self
            .buckets
            .chunks(2)
            .map(|pair| {
                if pair.len() == 2 {
                    Bucket::merge(&pair[0], &pair[1])
                } else {
                    pair[0]
                }
            })
            .collect();
        self.buckets.clear();
        self.buckets.extend_from_slice(&merged);
        self.width = self.width.saturating_mul(2);
    }

    /// The buckets, in x order.
    pub fn buckets(&self) -> &[Bucket] {
        &self.buckets
    }

    /// Points appended so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Points per bucket now.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Whether no point was appended.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Whether it holds at least one finite value.
    pub fn has_finite(&self) -> bool {
        self.buckets.iter().any(|b| b.count > 0)
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }

    /// Builds a series from `(x, value)` points.
    pub fn from_points(capacity: usize, points: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut s = Self::new(capacity);
        for (x, v) in points {
            s.push(x, v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_series_stays_within_capacity_and_keeps_extremes() {
        let mut s = Series::new(64);
        for i in 0..100_000u32 {
            let v = if i == 77_777 { 1e6 } else { f64::from(i % 10) };
            s.push(f64::from(i), v);
        }
        assert!(
            s.buckets().len() <= 64 && s.buckets().len() >= 32,
            "{}",
            s.buckets().len()
        );
        let max = s.buckets().iter().map(|b| b.max).fold(f64::MIN, f64::max);
        assert_eq!(max, 1e6, "the one spike survives downsampling");
        let points: u64 = s.buckets().iter().map(|b| u64::from(b.points)).sum();
        assert_eq!(points, 100_000);
        assert_eq!(s.buckets()[0].x_start, 0.0);
        assert_eq!(s.buckets().last().map(|b| b.x_end), Some(99_999.0));
    }

    #[test]
    fn non_finite_values_are_counted_apart() {
        let s = Series::from_points(
            4,
            [
                (0.0, 1.0),
                (1.0, f64::NAN),
                (2.0, 3.0),
                (3.0, f64::INFINITY),
                (4.0, 5.0),
            ],
        );
        let non_finite: u32 = s.buckets().iter().map(|b| b.non_finite).sum();
        assert_eq!(non_finite, 2);
        let sum: f64 = s.buckets().iter().map(|b| b.sum).sum();
        assert_eq!(sum, 9.0);
    }
}
