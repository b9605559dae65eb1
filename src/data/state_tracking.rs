//! State-tracking tasks: the running product of a word over a finite group, asked for at every
//! position.
//!
//! A row is a word `x₁ x₂ … x_T` of group elements drawn uniformly; the target at position `i`
//! is the state after reading `x₁ … xᵢ`, the running product `sᵢ = sᵢ₋₁ · xᵢ` (`s₁ = x₁`). This
//! is the word problem as "The Illusion of State in State-Space Models" poses it (Merrill, Petty
//! & Sabharwal 2024; `jopetty/word-problem`): token tagging, every position an answer. The
//! groups:
//!
//! - `parity`: ℤ₂, bits, the state is their XOR so far;
//! - `modular-add`: ℤₘ (`data.task.modulus`, default 5 as in Grazzi et al. 2024, "Unlocking
//!   State-Tracking in Linear RNNs Through Negative Eigenvalues"), the state is the running sum
//!   mod m;
//! - `s5`: the 120 permutations of 5 items, the theory's canonical hard case (its word problem
//!   is NC¹-complete: no fixed-depth transformer or diagonal SSM solves it at every length);
//! - `a5`: its 60 even permutations, the smallest non-solvable group, as hard.
//!
//! Grazzi et al. ask for the parity of a whole sequence at its last position; tagging asks for
//! it after every prefix, so one row of length L trains every length up to L. The sequence
//! accuracy (every position right) is their last-position accuracy, and stricter.
//!
//! Inputs and states share the element ids: element `e` is token `first + e` (the task's first
//! data id, after its special tokens), the identity
//! is element 0, and permutations are numbered in lexicographic order (of all 120 for S5, of
//! the even ones for A5).

use std::sync::OnceLock;

use crate::rng::Rng;

/// A finite group with elements `0..order`, 0 the identity.
#[derive(Clone, Copy, Debug)]
pub enum Group {
    /// ℤₘ under addition.
    Cyclic(usize),
    /// A group of permutations of 5 items, with its product table.
    Permutations(&'static PermutationGroup),
}

impl Group {
    pub fn order(self) -> usize {
        match self {
            Group::Cyclic(m) => m,
            Group::Permutations(g) => g.elements.len(),
        }
    }

    /// `a · b`: read `a`, then `b`.
    pub fn product(self, a: usize, b: usize) -> usize {
        match self {
            Group::Cyclic(m) => (a + b) % m,
            Group::Permutations(g) => g.table[a * g.elements.len() + b] as usize,
        }
    }
}

/// The permutations of a group, each as the images of `0..5`, and their product table.
#[derive(Debug)]
pub struct PermutationGroup {
    pub elements: Vec<[u8; 5]>,
    /// `table[a · order + b]` = the index of `a · b`.
    table: Vec<u16>,
}

/// The symmetric group S₅ (all 120 permutations).
pub fn s5() -> &'static PermutationGroup {
    static S5: OnceLock<PermutationGroup> = OnceLock::new();
    S5.get_or_init(|| PermutationGroup::new(|_| true))
}

/// The alternating group A₅ (the 60 even permutations).
pub fn a5() -> &'static PermutationGroup {
    static A5: OnceLock<PermutationGroup> = OnceLock::new();
    A5.get_or_init(|| PermutationGroup::new(is_even))
}

impl PermutationGroup {
    /// The permutations of `0..5` that `keep` accepts, in lexicographic order; they must be
    /// closed under composition.
    fn new(keep: fn(&[u8; 5]) -> bool) -> Self {
        let elements: Vec<[u8; 5]> = all_permutations().into_iter().filter(keep).collect();
        let index = |p: &[u8; 5]| elements.binary_search(p).expect("the set is closed under composition");
        let table = elements
            .iter()
            .flat_map(|a| elements.iter().map(move |b| (a, b)))
            .map(|(a, b)| index(&compose(a, b)) as u16)
            .collect();
        Self { elements, table }
    }
}

/// `a` then `b`: item `j` goes to `a[j]`, then to `b[a[j]]`.
pub fn compose(a: &[u8; 5], b: &[u8; 5]) -> [u8; 5] {
    std::array::from_fn(|j| b[a[j] as usize])
}

/// Every permutation of `0..5`, in lexicographic order.
fn all_permutations() -> Vec<[u8; 5]> {
    let mut out = Vec::with_capacity(120);
    let mut p = [0u8, 1, 2, 3, 4];
    loop {
        out.push(p);
        // The next permutation in lexicographic order (Knuth's algorithm L).
        let Some(i) = (0..4).rev().find(|&i| p[i] < p[i + 1]) else { return out };
        let j = (i + 1..5).rev().find(|&j| p[j] > p[i]).expect("p[i + 1] > p[i]");
        p.swap(i, j);
        p[i + 1..].reverse();
    }
}

/// Whether `p` is a product of an even number of transpositions (an even number of inversions).
pub fn is_even(p: &[u8; 5]) -> bool {
    let inversions =
        (0..5).flat_map(|i| (i + 1..5).map(move |j| (i, j))).filter(|&(i, j)| p[i] > p[j]).count();
    inversions % 2 == 0
}

/// One row of `len` positions: the word's tokens and, at each position, the state's token;
/// element `e` is token `first + e`.
pub fn word_problem(rng: &mut Rng, group: Group, len: usize, first: u32) -> (Vec<u32>, Vec<u32>) {
    let n = group.order();
    let mut state = 0; // the identity: s₁ = x₁
    let mut inputs = Vec::with_capacity(len);
    let mut states = Vec::with_capacity(len);
    for _ in 0..len {
        let x = rng.below(n);
        state = group.product(state, x);
        inputs.push(first + x as u32);
        states.push(first + state as u32);
    }
    (inputs, states)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tasks::FIRST_DATA;

    #[test]
    fn s5_and_a5_are_the_groups_they_claim() {
        let (s, a) = (s5(), a5());
        assert_eq!((s.elements.len(), a.elements.len()), (120, 60));
        assert!(a.elements.iter().all(is_even));
        for g in [Group::Permutations(s), Group::Permutations(a)] {
            let n = g.order();
            for x in 0..n {
                assert_eq!(g.product(0, x), x, "0 is the identity");
                assert_eq!(g.product(x, 0), x);
                // Every element has an inverse, and the table is a Latin square.
                assert_eq!((0..n).filter(|&y| g.product(x, y) == 0).count(), 1);
            }
            for (x, y, z) in [(3, 7, 11), (5, 2, 9), (n - 1, n / 2, 1)] {
                assert_eq!(g.product(g.product(x, y), z), g.product(x, g.product(y, z)), "associative");
            }
        }
        // Not abelian: some pair does not commute (a transposition and a 3-cycle).
        let g = Group::Permutations(s);
        assert!((0..120).any(|x| (0..120).any(|y| g.product(x, y) != g.product(y, x))));
    }

    /// The states follow from the word by an independent reading: move five labelled balls.
    #[test]
    fn states_are_the_running_products_of_the_words() {
        for (group, elements) in
            [(Group::Permutations(s5()), &s5().elements), (Group::Permutations(a5()), &a5().elements)]
        {
            let (inputs, states) = word_problem(&mut Rng::new(3), group, 50, FIRST_DATA);
            let mut balls = [0u8, 1, 2, 3, 4]; // balls[j]: where ball j is now
            for (x, s) in inputs.iter().zip(&states) {
                let p = elements[(x - FIRST_DATA) as usize];
                balls = balls.map(|at| p[at as usize]);
                assert_eq!(elements[(s - FIRST_DATA) as usize], balls);
            }
        }
        let (inputs, states) = word_problem(&mut Rng::new(4), Group::Cyclic(2), 200, FIRST_DATA);
        let mut parity = 0;
        for (x, s) in inputs.iter().zip(&states) {
            parity ^= x - FIRST_DATA;
            assert_eq!(*s, FIRST_DATA + parity);
        }
        let (inputs, states) = word_problem(&mut Rng::new(5), Group::Cyclic(7), 200, FIRST_DATA);
        for i in 0..200 {
            let sum: u32 = inputs[..=i].iter().map(|x| x - FIRST_DATA).sum();
            assert_eq!(states[i], FIRST_DATA + sum % 7);
        }
        // Uniform inputs use every element.
        let (inputs, _) = word_problem(&mut Rng::new(6), Group::Permutations(s5()), 5000, FIRST_DATA);
        let mut seen = inputs.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 120);
    }
}
