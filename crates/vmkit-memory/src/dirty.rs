//! Dirty-page bitmaps in KVM's layout.

use crate::region::PAGE_SIZE;

const BITS_PER_WORD: u64 = 64;

/// One bit per 4 KiB page of a range, packed in little-endian u64 words exactly as
/// `KVM_GET_DIRTY_LOG` returns them (bit `i % 64` of word `i / 64` is page `i`).
///
/// Page 0 starts at [`base`](Self::base): a guest address for the bitmap a listener fills in
/// `log_sync`, an offset inside the region for the one
/// [`AddressSpace::sync_dirty_log`](crate::AddressSpace::sync_dirty_log) returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirtyBitmap {
    base: u64,
    pages: u64,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// A clean bitmap for the pages touched by `[start, start + len)`: page 0 is the page
    /// containing `start` (so `base` is `start` rounded down to 4 KiB).
    pub fn new(start: u64, len: u64) -> Self {
        let base = start - start % PAGE_SIZE;
        let end = u128::from(start) + u128::from(len);
        let span = end - u128::from(base);
        let pages = u64::try_from(span.div_ceil(u128::from(PAGE_SIZE))).unwrap_or(u64::MAX);
        let words = usize::try_from(pages.div_ceil(BITS_PER_WORD)).unwrap_or(usize::MAX);
        Self {
            base,
            pages,
            words: vec![0; words],
        }
    }

    /// Address (or region offset) of page 0.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Number of pages covered.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The words, KVM layout; bits past the last page are always 0.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn locate(&self, page: u64) -> Option<(usize, u64)> {
        if page >= self.pages {
            return None;
        }
        let word = usize::try_from(page / BITS_PER_WORD).ok()?;
        Some((word, 1u64 << (page % BITS_PER_WORD)))
    }

    /// Whether page `page` (index from 0) is dirty; false past the end.
    pub fn is_dirty(&self, page: u64) -> bool {
        self.locate(page)
            .and_then(|(word, mask)| self.words.get(word).map(|w| w & mask != 0))
            .unwrap_or(false)
    }

    /// Marks page `page` dirty; ignored past the end.
    pub fn mark_dirty(&mut self, page: u64) {
        if let Some((word, mask)) = self.locate(page) {
            if let Some(w) = self.words.get_mut(word) {
                *w |= mask;
            }
        }
    }

    /// Marks every page touched by `[addr, addr + len)` dirty (addresses in the bitmap's own
    /// space, i.e. comparable with [`base`](Self::base)); the part outside is ignored.
    pub fn mark_range(&mut self, addr: u64, len: u64) {
        let end = u128::from(addr) + u128::from(len);
        if len == 0 || end <= u128::from(self.base) || self.pages == 0 {
            return;
        }
        let first_page = (addr.max(self.base) - self.base) / PAGE_SIZE;
        let last_page = u64::try_from((end - 1 - u128::from(self.base)) / u128::from(PAGE_SIZE))
            .unwrap_or(u64::MAX)
            .min(self.pages - 1);
        for page in first_page..=last_page {
            self.mark_dirty(page);
        }
    }

    /// ORs KVM-layout `words` in, word 0 bit 0 landing on page `first_page` (any page, not
    /// only a multiple of 64). Bits beyond the bitmap are dropped.
    pub fn merge_words_at(&mut self, first_page: u64, words: &[u64]) {
        for (index, &word) in words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let bit = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                let page = (index as u64)
                    .saturating_mul(BITS_PER_WORD)
                    .saturating_add(bit)
                    .saturating_add(first_page);
                self.mark_dirty(page);
            }
        }
    }

    /// ORs a `KVM_GET_DIRTY_LOG` result for exactly this range in.
    pub fn merge_kvm_log(&mut self, words: &[u64]) {
        self.merge_words_at(0, words);
    }

    /// ORs another bitmap in, aligning both on their bases (pages outside this one are dropped).
    pub fn merge(&mut self, other: &DirtyBitmap) {
        for page in other.dirty_pages() {
            let addr = other.base.saturating_add(page.saturating_mul(PAGE_SIZE));
            if addr >= self.base {
                self.mark_dirty((addr - self.base) / PAGE_SIZE);
            }
        }
    }

    /// Clears every bit.
    pub fn clear(&mut self) {
        self.words.iter_mut().for_each(|w| *w = 0);
    }

    /// Number of dirty pages.
    pub fn count_dirty(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Indices of the dirty pages, ascending.
    pub fn dirty_pages(&self) -> impl Iterator<Item = u64> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = u64::from(bits.trailing_zeros());
                bits &= bits - 1;
                Some((index as u64) * BITS_PER_WORD + bit)
            })
        })
    }

    /// Start addresses (`base + page * 4096`) of the dirty pages, ascending.
    pub fn dirty_addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.dirty_pages()
            .map(|page| self.base.wrapping_add(page.wrapping_mul(PAGE_SIZE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kvm_words_land_on_the_right_pages() {
        let mut bitmap = DirtyBitmap::new(0x10_0000, 130 * PAGE_SIZE);
        assert_eq!(bitmap.pages(), 130);
        assert_eq!(bitmap.words().len(), 3);
        bitmap.merge_kvm_log(&[0b101, 1 << 63, 0b10]);
        assert_eq!(
            bitmap.dirty_pages().collect::<Vec<_>>(),
            vec![0, 2, 127, 129]
        );
        assert!(bitmap.is_dirty(129));
        assert!(!bitmap.is_dirty(128));
        assert_eq!(
            bitmap.dirty_addresses().collect::<Vec<_>>(),
            vec![
                0x10_0000,
                0x10_2000,
                0x10_0000 + 127 * 0x1000,
                0x10_0000 + 129 * 0x1000
            ]
        );
        bitmap.clear();
        assert_eq!(bitmap.count_dirty(), 0);
    }

    #[test]
    fn bits_past_the_end_are_dropped() {
        let mut bitmap = DirtyBitmap::new(0, 3 * PAGE_SIZE);
        bitmap.merge_kvm_log(&[u64::MAX, u64::MAX]);
        assert_eq!(bitmap.count_dirty(), 3);
        assert_eq!(bitmap.words(), &[0b111]);
        bitmap.mark_dirty(3);
        assert!(!bitmap.is_dirty(3));
        assert!(!bitmap.is_dirty(u64::MAX));
    }

    #[test]
    fn shifted_merge_and_ranges() {
        let mut bitmap = DirtyBitmap::new(0, 200 * PAGE_SIZE);
        bitmap.merge_words_at(70, &[0b11]);
        assert_eq!(bitmap.dirty_pages().collect::<Vec<_>>(), vec![70, 71]);
        bitmap.mark_range(5 * PAGE_SIZE + 10, PAGE_SIZE);
        assert!(bitmap.is_dirty(5) && bitmap.is_dirty(6) && !bitmap.is_dirty(7));

        // An unaligned start: page 0 is the page holding the start.
        let partial = DirtyBitmap::new(0x1800, 0x1000);
        assert_eq!((partial.base(), partial.pages()), (0x1000, 2));

        let mut other = DirtyBitmap::new(0x3000, 2 * PAGE_SIZE);
        other.mark_dirty(1);
        let mut big = DirtyBitmap::new(0, 8 * PAGE_SIZE);
        big.merge(&other);
        assert_eq!(big.dirty_pages().collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn extreme_ranges_do_not_panic() {
        let mut bitmap = DirtyBitmap::new(u64::MAX - 10, 10);
        bitmap.mark_range(u64::MAX - 5, 5);
        assert_eq!(bitmap.count_dirty(), 1);
        bitmap.mark_range(0, 1);
        bitmap.merge_words_at(u64::MAX, &[u64::MAX]);
        assert_eq!(bitmap.count_dirty(), 1);
    }
}
