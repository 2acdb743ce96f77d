//! The Merkle tree of a service's history, as Certificate Transparency
//! defines it (RFC 6962 §2.1, RFC 9162 §2.1): leaf `i` is the `i`-th event
//! in publication order, its input the event's chain hash. A signed tree
//! head (a checkpoint) commits to every event before it; an inclusion proof
//! shows one event is among them, a consistency proof that a later tree
//! extends an earlier one.
//!
//! The trees here hold millions of leaves kept in a database, so the
//! algorithms are written over leaf hashes in memory and an incremental
//! frontier rather than taken from an in-memory tree crate; `ct-merkle`
//! (a maintained implementation of the same RFC) is the oracle the tests
//! check every root and proof against.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 || input)`: the hash of a leaf.
pub fn leaf_hash(input: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(input);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`: the hash of an interior node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two smaller than `n` (n > 1).
fn split(n: u64) -> u64 {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// The roots of the perfect subtrees a tree of `size` leaves decomposes
/// into, left to right: enough to extend it and to compute its root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, root) of each perfect subtree, larger first.
    peaks: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends the leaf whose hash is `leaf`.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.peaks.last() {
            if h != node.0 {
                break;
            }
            self.peaks.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.peaks.push(node);
        self.size += 1;
    }

    /// The Merkle tree hash of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }

    /// The peaks as bytes (32 per peak), to be stored beside a checkpoint.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.peaks
            .iter()
            .flat_map(|(_, h)| h.iter().copied())
            .collect()
    }

    /// A frontier of `size` leaves from its stored peaks; None when the
    /// bytes cannot be those of a tree of that size.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Self> {
        let heights: Vec<u32> = (0..64).rev().filter(|b| size >> b & 1 == 1).collect();
        if bytes.len() != heights.len() * 32 {
            return None;
        }
        let peaks = heights
            .into_iter()
            .zip(bytes.chunks_exact(32))
            .map(|(h, c)| {
                let mut x = [0u8; 32];
                x.copy_from_slice(c);
                (h, x)
            })
            .collect();
        Some(Self { size, peaks })
    }
}

/// Proofs over a tree whose leaf hashes are all in memory, with perfect
/// subtrees' hashes memoised (each proof reuses most of them).
pub struct Tree<'a> {
    leaves: &'a [Hash],
    memo: HashMap<(u64, u64), Hash>,
}

impl<'a> Tree<'a> {
    pub fn new(leaves: &'a [Hash]) -> Self {
        Self {
            leaves,
            memo: HashMap::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// MTH(D[start:end]).
    pub fn hash(&mut self, start: u64, end: u64) -> Hash {
        let n = end - start;
        match n {
            0 => empty_root(),
            1 => self.leaves[start as usize],
            _ => {
                let perfect = n.is_power_of_two();
                if perfect {
                    if let Some(h) = self.memo.get(&(start, n)) {
                        return *h;
                    }
                }
                let k = split(n);
                let left = self.hash(start, start + k);
                let right = self.hash(start + k, end);
                let h = node_hash(&left, &right);
                if perfect {
                    self.memo.insert((start, n), h);
                }
                h
            }
        }
    }

    pub fn root(&mut self, size: u64) -> Hash {
        self.hash(0, size)
    }

    /// PATH(m, D[0:size]): the audit path of leaf `m` in the tree of the
    /// first `size` leaves.
    pub fn inclusion_proof(&mut self, m: u64, size: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        self.path(m, 0, size, &mut out);
        out
    }

    fn path(&mut self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.hash(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.hash(start, start + k));
        }
    }

    /// PROOF(m, D[0:size]): that the tree of the first `m` leaves is a
    /// prefix of the tree of the first `size`.
    pub fn consistency_proof(&mut self, m: u64, size: u64) -> Vec<Hash> {
        let mut out = Vec::new();
        if m > 0 && m < size {
            self.subproof(m, 0, size, true, &mut out);
        }
        out
    }

    fn subproof(&mut self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.hash(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.hash(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.hash(start, start + k));
        }
    }
}

/// RFC 9162 §2.1.3.2: does `proof` show the leaf `leaf` at `index` in the
/// tree of `size` leaves whose root is `root`?
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut r) = (index, size - 1, *leaf);
    for p in proof {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && &r == root
}

/// RFC 9162 §2.1.4.2: does `proof` show that the tree of `first` leaves
/// with root `first_root` is a prefix of the tree of `second` leaves with
/// root `second_root`?
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Hash],
    first_root: &Hash,
    second_root: &Hash,
) -> bool {
    if first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    if first == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (first - 1, second - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    &fr == first_root && &sr == second_root && snode == 0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ct_merkle::mem_backed_tree::MemoryBackedTree;

    fn inputs(n: usize) -> Vec<[u8; 32]> {
        (0..n)
            .map(|i| Sha256::digest(format!("event {i}").as_bytes()).into())
            .collect()
    }

    /// ct-merkle hashes a leaf `SHA-256(0x00 || bytes)`: the same leaf
    /// hashing when each leaf's bytes are our leaf input.
    fn oracle(inputs: &[[u8; 32]]) -> MemoryBackedTree<Sha256, Vec<u8>> {
        let mut t = MemoryBackedTree::new();
        for i in inputs {
            t.push(i.to_vec());
        }
        t
    }

    fn hashes(proof: &[Hash]) -> Vec<u8> {
        proof.iter().flatten().copied().collect()
    }

    #[test]
    fn roots_and_proofs_equal_the_oracle_for_every_small_tree() {
        let all = inputs(70);
        let leaves: Vec<Hash> = all.iter().map(|i| leaf_hash(i)).collect();
        for n in 1..=all.len() {
            let o = oracle(&all[..n]);
            let mut t = Tree::new(&leaves[..n]);
            let root = t.root(n as u64);
            assert_eq!(&root[..], o.root().as_bytes().as_slice(), "root of {n}");
            let mut f = Frontier::default();
            for l in &leaves[..n] {
                f.push(*l);
            }
            assert_eq!(f.root(), root, "frontier root of {n}");
            assert_eq!(
                Frontier::from_bytes(n as u64, &f.to_bytes()),
                Some(f.clone())
            );
            for m in 0..n {
                let proof = t.inclusion_proof(m as u64, n as u64);
                assert_eq!(
                    hashes(&proof),
                    o.prove_inclusion(m).as_bytes(),
                    "path {m} of {n}"
                );
                assert!(verify_inclusion(
                    &leaves[m], m as u64, n as u64, &proof, &root
                ));
                // Another leaf, index or size does not verify.
                let other = leaves[(m + 1) % n];
                assert!(n == 1 || !verify_inclusion(&other, m as u64, n as u64, &proof, &root));
                assert!(!verify_inclusion(
                    &leaves[m], n as u64, n as u64, &proof, &root
                ));
            }
            for m in 1..n {
                let proof = t.consistency_proof(m as u64, n as u64);
                assert_eq!(
                    hashes(&proof),
                    o.prove_consistency(n - m).as_bytes(),
                    "consistency {m} -> {n}"
                );
                let old = t.root(m as u64);
                assert!(verify_consistency(m as u64, n as u64, &proof, &old, &root));
                let mut forged = old;
                forged[0] ^= 1;
                assert!(!verify_consistency(
                    m as u64, n as u64, &proof, &forged, &root
                ));
                assert!(!verify_consistency(
                    m as u64, n as u64, &proof, &old, &forged
                ));
            }
        }
    }

    #[test]
    fn a_changed_leaf_changes_every_later_root_but_no_earlier_one() {
        let mut all = inputs(40);
        let before: Vec<Hash> = all.iter().map(|i| leaf_hash(i)).collect();
        all[17][3] ^= 0x80;
        let after: Vec<Hash> = all.iter().map(|i| leaf_hash(i)).collect();
        let (mut a, mut b) = (Tree::new(&before), Tree::new(&after));
        for n in 1..=40u64 {
            assert_eq!(a.root(n) == b.root(n), n <= 17, "size {n}");
        }
        assert_eq!(empty_root(), Tree::new(&[]).root(0));
        assert_eq!(Frontier::from_bytes(3, &[0u8; 32]), None);
    }
}
