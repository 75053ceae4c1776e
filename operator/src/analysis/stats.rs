//! Exact running statistics that take O(1) memory: mean and sample variance (Welford), least-squares
//! slope, a fixed window of the latest values, and quantiles of a small batch.

/// `x` rounded to five significant digits: what `kubectl get flm` and alert messages show (the
/// exact values are in the report and on `/metrics`). Zero and non-finite values are unchanged.
pub fn significant(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 5 - x.abs().log10().ceil() as i32;
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Running mean and sample variance (Welford's algorithm, numerically stable).
///
/// For values x₁…xₙ: `mean = Σxᵢ / n`; `M2 = Σ(xᵢ − mean)²`, updated per value as
/// `δ = x − mean; mean += δ / n; M2 += δ · (x − mean)`; sample variance `s² = M2 / (n − 1)`
/// (not `/ n`: the window is a sample of the process, not the whole population).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    /// Adds a finite value (non-finite ones are the caller's to count and skip).
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Values added.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Mean; `None` before the first value.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Sample variance `M2 / (n − 1)`; `None` below two values.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| (self.m2 / (self.n - 1) as f64).max(0.0))
    }

    /// Sample standard deviation `√s²`.
    pub fn std_dev(&self) -> Option<f64> {
        self.variance().map(f64::sqrt)
    }
}

/// Running least-squares line through points (x, y).
///
/// Co-moment form of Welford's update: `dx = x − x̄; x̄ += dx / n; ȳ += (y − ȳ) / n;
/// Cxy += dx · (y − ȳ); Mxx += dx · (x − x̄)`; slope `b = Cxy / Mxx`
/// (= Σ(x − x̄)(y − ȳ) / Σ(x − x̄)², the ordinary least-squares slope).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Regression {
    n: u64,
    mean_x: f64,
    mean_y: f64,
    c_xy: f64,
    m_xx: f64,
}

impl Regression {
    /// Adds a finite point.
    pub fn push(&mut self, x: f64, y: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dx = x - self.mean_x;
        self.mean_x += dx / n;
        self.mean_y += (y - self.mean_y) / n;
        self.c_xy += dx * (y - self.mean_y);
        self.m_xx += dx * (x - self.mean_x);
    }

    /// Points added.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Least-squares slope; `None` below two distinct x.
    pub fn slope(&self) -> Option<f64> {
        (self.n > 1 && self.m_xx > 0.0).then(|| self.c_xy / self.m_xx)
    }

    /// Mean of y.
    pub fn mean_y(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean_y)
    }
}

/// The latest `capacity` (≤ 64) (round, value) pairs, oldest first, in a fixed ring (no heap).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    rounds: [u64; 64],
    values: [f64; 64],
    /// Index of the oldest item.
    head: usize,
    len: usize,
    capacity: usize,
}

impl Window {
    /// An empty window of `capacity` values (clamped to 1–64).
    pub fn new(capacity: usize) -> Self {
        Self {
            rounds: [0; 64],
            values: [0.0; 64],
            head: 0,
            len: 0,
            capacity: capacity.clamp(1, 64),
        }
    }

    /// Adds a value, dropping the oldest when full.
    #[inline]
    pub fn push(&mut self, round: u64, value: f64) {
        let slot = if self.len == self.capacity {
            let slot = self.head;
            self.head = (self.head + 1) % self.capacity;
            slot
        } else {
            self.len += 1;
            (self.head + self.len - 1) % self.capacity
        };
        self.rounds[slot] = round;
        self.values[slot] = value;
    }

    /// Whether it holds `capacity` values.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn at(&self, i: usize) -> (u64, f64) {
        let slot = (self.head + i) % self.capacity;
        (self.rounds[slot], self.values[slot])
    }

    /// Oldest (round, value).
    #[inline]
    pub fn first(&self) -> Option<(u64, f64)> {
        (self.len > 0).then(|| self.at(0))
    }

    /// Newest (round, value).
    #[inline]
    pub fn last(&self) -> Option<(u64, f64)> {
        (self.len > 0).then(|| self.at(self.len - 1))
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        (0..self.len).map(|i| self.at(i).1)
    }

    /// Mean of the values.
    #[inline]
    pub fn mean(&self) -> Option<f64> {
        (self.len > 0).then(|| self.values().sum::<f64>() / self.len as f64)
    }

    /// Sample variance of the values, `Σ(v − v̄)² / (n − 1)`; `None` below two values.
    pub fn variance(&self) -> Option<f64> {
        let mean = self.mean()?;
        (self.len > 1).then(|| self.values().map(|v| (v - mean).powi(2)).sum::<f64>() / (self.len - 1) as f64)
    }

    /// Empties it.
    pub fn clear(&mut self) {
        self.len = 0;
        self.head = 0;
    }
}

/// The q-quantile (0 ≤ q ≤ 1) of `values` by linear interpolation between closest ranks
/// (`h = (n − 1)·q`, result `v⌊h⌋ + (h − ⌊h⌋)(v⌊h⌋₊₁ − v⌊h⌋)` on the sorted values); sorts `values`.
/// `None` when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    Some(quantile_sorted(values, q))
}

/// [`quantile`] of values already sorted ascending (and not empty).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_gives_the_sample_variance_with_n_minus_one() {
        let mut w = Welford::default();
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            w.push(x);
        }
        assert_eq!(w.mean(), Some(5.0));
        // Σ(x − 5)² = 32; 32 / 7, not the population's 32 / 8 = 4.
        assert!((w.variance().expect("8 values") - 32.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn regression_slope_matches_least_squares() {
        let mut r = Regression::default();
        for (x, y) in [(1.0, 2.0), (2.0, 4.1), (3.0, 5.9), (4.0, 8.0)] {
            r.push(x, y);
        }
        // x̄ = 2.5, ȳ = 5; Σdx·dy = (−1.5)(−3) + (−.5)(−.9) + (.5)(.9) + (1.5)(3) = 9.9; Σdx² = 5.
        assert!((r.slope().expect("4 points") - 1.98).abs() < 1e-12);
    }

    #[test]
    fn window_keeps_the_latest_values() {
        let mut w = Window::new(3);
        for (r, v) in [(1, 1.0), (2, 2.0), (3, 3.0), (4, 5.0)] {
            w.push(r, v);
        }
        assert_eq!((w.first(), w.last()), (Some((2, 2.0)), Some((4, 5.0))));
        // Values 2, 3, 5: mean 10/3, Σ(v − v̄)² = 14/3, over n − 1 = 2.
        assert!((w.variance().expect("3 values") - 7.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let mut v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&mut v, 0.5), Some(2.5));
        assert_eq!(quantile(&mut v, 0.0), Some(1.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
