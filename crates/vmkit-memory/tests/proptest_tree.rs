//! Property test: random region trees and random change sequences.
//!
//! After every change (or refused change):
//! - the flat view equals a brute-force evaluation of an independent model of the tree at
//!   every 1 KiB unit (which terminal region, at which offset, RAM/ROM/I/O, dirty flag);
//! - the flat view is sorted, non-overlapping and maximally merged;
//! - every listener's own model, built only from the add/del/log calls it received, equals the
//!   flat view (including a listener that refuses random calls, which forces undo);
//! - the vm-memory snapshot holds exactly the whole pages of the RAM/ROM sections.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vmkit_memory::{
    AddressSpace, Error, ListenerError, ListenerResult, MemoryListener, RegionId, Section,
    SectionKind, PAGE_SIZE,
};

/// Granule of I/O sizes and offsets in this test (pages for everything else).
const UNIT: u64 = 1024;
/// Everything the generator can place lies below this address.
const UNIVERSE: u64 = 64 * PAGE_SIZE;
const CONTAINER_PAGES: u64 = 24;

// ---------------------------------------------------------------------------------------------
// Independent model of the tree.

#[derive(Clone, Debug)]
enum MKind {
    Ram { rom: bool, dirty: bool },
    Io,
    Container,
    Alias { target: usize, offset: u64 },
}

#[derive(Clone, Debug)]
struct MChild {
    index: usize,
    offset: u64,
    priority: i32,
    seq: u64,
}

#[derive(Clone, Debug)]
struct MRegion {
    id: RegionId,
    kind: MKind,
    size: u64,
    enabled: bool,
    readonly: bool,
    parent: Option<usize>,
    children: Vec<MChild>,
}

#[derive(Clone, Debug)]
struct Model {
    /// Index 0 is the root.
    regions: Vec<MRegion>,
    seq: u64,
}

/// What the guest sees at one address: (terminal region, offset in it, kind, dirty logging).
type Seen = (RegionId, u64, SectionKind, bool);

impl Model {
    fn byte_granular(&self, mut index: usize) -> bool {
        loop {
            match self.regions[index].kind {
                MKind::Io => return true,
                MKind::Alias { target, .. } => index = target,
                _ => return false,
            }
        }
    }

    fn reaches(&self, from: usize, needle: usize) -> bool {
        if from == needle {
            return true;
        }
        let region = &self.regions[from];
        match region.kind {
            MKind::Alias { target, .. } => self.reaches(target, needle),
            MKind::Container => region
                .children
                .iter()
                .any(|c| self.reaches(c.index, needle)),
            _ => false,
        }
    }

    /// QEMU semantics by direct point query: a container shows its highest-priority
    /// (newest among equals) child that shows something at that address.
    fn lookup(&self, index: usize, rel: i128, readonly: bool) -> Option<Seen> {
        let region = &self.regions[index];
        if !region.enabled || rel < 0 || rel >= i128::from(region.size) {
            return None;
        }
        let readonly = readonly || region.readonly;
        match region.kind {
            MKind::Ram { dirty, .. } => {
                let kind = if readonly {
                    SectionKind::Rom
                } else {
                    SectionKind::Ram
                };
                Some((region.id, rel as u64, kind, dirty))
            }
            MKind::Io => Some((region.id, rel as u64, SectionKind::Io, false)),
            MKind::Alias { target, offset } => {
                self.lookup(target, rel + i128::from(offset), readonly)
            }
            MKind::Container => {
                let mut order: Vec<&MChild> = region.children.iter().collect();
                order.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.seq.cmp(&a.seq)));
                order
                    .into_iter()
                    .find_map(|c| self.lookup(c.index, rel - i128::from(c.offset), readonly))
            }
        }
    }

    fn position(&self, child: usize) -> Option<(usize, usize)> {
        let parent = self.regions[child].parent?;
        let pos = self.regions[parent]
            .children
            .iter()
            .position(|c| c.index == child)?;
        Some((parent, pos))
    }
}

// ---------------------------------------------------------------------------------------------
// Listeners that keep their own model.

#[derive(Default)]
struct ListenerModel {
    sections: BTreeMap<u64, Section>,
    /// Fail the call with this number (counted from 0 over all calls) once.
    fail_at: Option<u64>,
    calls: u64,
    in_update: bool,
}

#[derive(Clone, Default)]
struct ModelListener(Arc<Mutex<ListenerModel>>);

impl ModelListener {
    fn maybe_fail(&self) -> ListenerResult {
        let mut m = self.0.lock().unwrap();
        let call = m.calls;
        m.calls += 1;
        if m.fail_at == Some(call) {
            m.fail_at = None;
            return Err(ListenerError::new("injected failure"));
        }
        Ok(())
    }

    fn arm(&self, fail_after: Option<u64>) {
        let mut m = self.0.lock().unwrap();
        m.fail_at = fail_after.map(|n| m.calls + n);
    }

    fn view(&self) -> Vec<Section> {
        self.0.lock().unwrap().sections.values().cloned().collect()
    }
}

impl MemoryListener for ModelListener {
    fn begin(&mut self) -> ListenerResult {
        self.maybe_fail()?;
        let mut m = self.0.lock().unwrap();
        assert!(!m.in_update, "nested begin");
        m.in_update = true;
        Ok(())
    }

    fn commit(&mut self) -> ListenerResult {
        self.maybe_fail()?;
        let mut m = self.0.lock().unwrap();
        assert!(m.in_update, "commit without begin");
        m.in_update = false;
        Ok(())
    }

    fn region_add(&mut self, s: &Section) -> ListenerResult {
        self.maybe_fail()?;
        let mut m = self.0.lock().unwrap();
        assert!(m.in_update);
        let overlap = m
            .sections
            .values()
            .any(|o| u128::from(s.guest_addr) < o.end() && u128::from(o.guest_addr) < s.end());
        assert!(!overlap, "add of {s:?} overlaps the listener's view");
        m.sections.insert(s.guest_addr, s.clone());
        Ok(())
    }

    fn region_del(&mut self, s: &Section) -> ListenerResult {
        self.maybe_fail()?;
        let mut m = self.0.lock().unwrap();
        assert!(m.in_update);
        let removed = m.sections.remove(&s.guest_addr);
        assert_eq!(
            removed.as_ref(),
            Some(s),
            "del of a section the listener does not have"
        );
        Ok(())
    }

    fn region_nop(&mut self, s: &Section) -> ListenerResult {
        self.maybe_fail()?;
        let m = self.0.lock().unwrap();
        let have = m
            .sections
            .get(&s.guest_addr)
            .expect("nop of an unknown section");
        assert!(have.same_mapping(s));
        Ok(())
    }

    fn log_start(&mut self, s: &Section) -> ListenerResult {
        self.maybe_fail()?;
        let mut m = self.0.lock().unwrap();
        let have = m
            .sections
            .get_mut(&s.guest_addr)
            .expect("log_start of unknown section");
        assert!(!have.dirty_log && s.dirty_log);
        have.dirty_log = true;
        Ok(())
    }

    fn log_stop(&mut self, s: &Section) -> ListenerResult {
        self.maybe_fail()?;
        let mut m = self.0.lock().unwrap();
        let have = m
            .sections
            .get_mut(&s.guest_addr)
            .expect("log_stop of unknown section");
        assert!(have.dirty_log && !s.dirty_log);
        have.dirty_log = false;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Generated input.

#[derive(Clone, Debug)]
struct AliasSpec {
    /// Which earlier region it targets (modulo the number of earlier regions).
    target: usize,
    /// Fractions of the target used for the window.
    offset: u64,
    size: u64,
}

#[derive(Clone, Debug)]
enum Act {
    Add {
        container: usize,
        child: usize,
        offset: u64,
        priority: i32,
    },
    Remove {
        container: usize,
        child: usize,
    },
    Enable(usize, bool),
    Move(usize, u64),
    Priority(usize, i32),
    Readonly(usize, bool),
    AliasOffset(usize, u64),
    Dirty(usize, bool),
    /// Adds an alias to the root exactly over the bytes it shows when its target sits in the
    /// root, so the flat view must merge the pieces from both paths.
    Mirror(usize, i32),
    Transaction(Vec<Act>),
}

fn simple_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        4 => (0..3usize, 0..16usize, 0..32u64, -2..3i32).prop_map(|(container, child, offset, priority)| {
            Act::Add { container, child, offset, priority }
        }),
        2 => (0..3usize, 0..16usize).prop_map(|(container, child)| Act::Remove { container, child }),
        1 => (0..16usize, any::<bool>()).prop_map(|(r, on)| Act::Enable(r, on)),
        1 => (0..16usize, 0..32u64).prop_map(|(r, o)| Act::Move(r, o)),
        1 => (0..16usize, -2..3i32).prop_map(|(r, p)| Act::Priority(r, p)),
        1 => (0..16usize, any::<bool>()).prop_map(|(r, on)| Act::Readonly(r, on)),
        1 => (0..16usize, 0..8u64).prop_map(|(r, o)| Act::AliasOffset(r, o)),
        1 => (0..16usize, any::<bool>()).prop_map(|(r, on)| Act::Dirty(r, on)),
        2 => (0..3usize, -2..3i32).prop_map(|(a, p)| Act::Mirror(a, p)),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        8 => simple_act(),
        1 => prop::collection::vec(simple_act(), 1..5).prop_map(Act::Transaction),
    ]
}

#[derive(Clone, Debug)]
struct Input {
    ram_pages: Vec<u64>,
    io_units: Vec<u64>,
    aliases: Vec<AliasSpec>,
    /// Per step: let the refusing listener fail at its n-th call of this step.
    steps: Vec<(Act, Option<u64>)>,
}

fn input() -> impl Strategy<Value = Input> {
    (
        prop::collection::vec(1..9u64, 4),
        prop::collection::vec(1..7u64, 3),
        prop::collection::vec(
            (0..16usize, 0..100u64, 1..101u64).prop_map(|(target, offset, size)| AliasSpec {
                target,
                offset,
                size,
            }),
            3,
        ),
        prop::collection::vec((act(), prop::option::weighted(0.3, 0..12u64)), 1..40),
    )
        .prop_map(|(ram_pages, io_units, aliases, steps)| Input {
            ram_pages,
            io_units,
            aliases,
            steps,
        })
}

// ---------------------------------------------------------------------------------------------
// The harness.

struct Harness {
    space: AddressSpace,
    model: Model,
    listeners: Vec<ModelListener>,
    refuser: ModelListener,
}

impl Harness {
    fn new(input: &Input) -> Self {
        let mut space = AddressSpace::new("root");
        let mut regions = vec![MRegion {
            id: space.root(),
            kind: MKind::Container,
            size: u64::MAX,
            enabled: true,
            readonly: false,
            parent: None,
            children: Vec::new(),
        }];
        let mut push = |id: RegionId, kind: MKind, size: u64| {
            // A ROM is RAM that starts out read-only.
            let readonly = matches!(kind, MKind::Ram { rom: true, .. });
            regions.push(MRegion {
                id,
                kind,
                size,
                enabled: true,
                readonly,
                parent: None,
                children: Vec::new(),
            })
        };
        // Indices: 1..=4 RAM (the last one a ROM), 5..=7 I/O, 8..=9 containers, 10..=12 aliases.
        for (i, &pages) in input.ram_pages.iter().enumerate() {
            let rom = i == 3;
            let size = pages * PAGE_SIZE;
            let id = if rom {
                space.new_rom(&format!("rom{i}"), size)
            } else {
                space.new_ram(&format!("ram{i}"), size)
            }
            .unwrap();
            push(id, MKind::Ram { rom, dirty: false }, size);
        }
        for (i, &units) in input.io_units.iter().enumerate() {
            // Sizes like 1 KiB..6 KiB: not page multiples.
            let size = units * UNIT;
            push(
                space.new_io(&format!("io{i}"), size).unwrap(),
                MKind::Io,
                size,
            );
        }
        for i in 0..2 {
            let size = CONTAINER_PAGES * PAGE_SIZE;
            let id = space.new_container(&format!("box{i}"), size).unwrap();
            push(id, MKind::Container, size);
        }
        Self::add_aliases(&mut space, &mut regions, &input.aliases);
        let model = Model { regions, seq: 0 };
        let listeners = vec![ModelListener::default(), ModelListener::default()];
        let refuser = ModelListener::default();
        // Order: a listener before the refusing one (gets undone), the refusing one, one
        // after it (never hears of a refused change).
        space
            .register_listener(Box::new(listeners[0].clone()))
            .unwrap();
        space.register_listener(Box::new(refuser.clone())).unwrap();
        space
            .register_listener(Box::new(listeners[1].clone()))
            .unwrap();
        Self {
            space,
            model,
            listeners,
            refuser,
        }
    }

    fn add_aliases(space: &mut AddressSpace, regions: &mut Vec<MRegion>, specs: &[AliasSpec]) {
        for (i, spec) in specs.iter().enumerate() {
            // Target any earlier non-root region.
            let target = 1 + spec.target % (regions.len() - 1);
            let target_size = regions[target].size;
            let chain = Model {
                regions: regions.clone(),
                seq: 0,
            };
            let granule = if chain.byte_granular(target) {
                UNIT
            } else {
                PAGE_SIZE
            };
            let units = target_size / granule;
            let offset_units = spec.offset * units / 100;
            let size_units = (spec.size * (units - offset_units) / 100).max(1);
            let (offset, size) = (offset_units * granule, size_units * granule);
            let id = space
                .new_alias(&format!("alias{i}"), regions[target].id, offset, size)
                .unwrap();
            regions.push(MRegion {
                id,
                kind: MKind::Alias { target, offset },
                size,
                enabled: true,
                readonly: false,
                parent: None,
                children: Vec::new(),
            });
        }
    }

    fn region(&self, selector: usize) -> usize {
        1 + selector % (self.model.regions.len() - 1)
    }

    fn container(&self, selector: usize) -> usize {
        [0, 8, 9][selector % 3]
    }

    fn granule(&self, index: usize) -> u64 {
        if self.model.byte_granular(index) {
            UNIT
        } else {
            PAGE_SIZE
        }
    }

    /// Applies one act to the space; on success mirrors it in the model. Checks that the
    /// space accepted exactly what the model says is valid.
    fn step(&mut self, act: &Act) -> Result<(), Error> {
        let m = &self.model;
        match *act {
            Act::Add {
                container,
                child,
                offset,
                priority,
            } => {
                let (c, ch) = (self.container(container), self.region(child));
                let offset = offset * self.granule(ch);
                let valid = m.regions[ch].parent.is_none() && !m.reaches(ch, c);
                let result = self.space.add_subregion_overlap(
                    m.regions[c].id,
                    offset,
                    m.regions[ch].id,
                    priority,
                );
                self.expect(valid, &result);
                if result.is_ok() {
                    self.model.seq += 1;
                    let seq = self.model.seq;
                    self.model.regions[c].children.push(MChild {
                        index: ch,
                        offset,
                        priority,
                        seq,
                    });
                    self.model.regions[ch].parent = Some(c);
                }
                result
            }
            Act::Remove { container, child } => {
                let (c, ch) = (self.container(container), self.region(child));
                let valid = m.regions[ch].parent == Some(c);
                let result = self
                    .space
                    .remove_subregion(m.regions[c].id, m.regions[ch].id);
                self.expect(valid, &result);
                if result.is_ok() {
                    let (parent, pos) = self.model.position(ch).unwrap();
                    self.model.regions[parent].children.remove(pos);
                    self.model.regions[ch].parent = None;
                }
                result
            }
            Act::Enable(r, on) => {
                let r = self.region(r);
                let result = self.space.set_enabled(m.regions[r].id, on);
                self.expect(true, &result);
                if result.is_ok() {
                    self.model.regions[r].enabled = on;
                }
                result
            }
            Act::Move(r, offset) => {
                let r = self.region(r);
                let offset = offset * self.granule(r);
                self.replace(r, Some(offset), None)
            }
            Act::Priority(r, priority) => {
                let r = self.region(r);
                self.replace(r, None, Some(priority))
            }
            Act::Readonly(r, on) => {
                let r = self.region(r);
                let valid = !matches!(m.regions[r].kind, MKind::Io);
                let result = self.space.set_readonly(m.regions[r].id, on);
                self.expect(valid, &result);
                if result.is_ok() {
                    self.model.regions[r].readonly = on;
                }
                result
            }
            Act::AliasOffset(r, fraction) => {
                let r = self.region(r);
                let (valid, new_offset) = match m.regions[r].kind {
                    MKind::Alias { target, .. } => {
                        let granule = self.granule(target);
                        let offset = fraction * granule;
                        (offset + m.regions[r].size <= m.regions[target].size, offset)
                    }
                    _ => (false, fraction * PAGE_SIZE),
                };
                let result = self.space.set_alias_offset(m.regions[r].id, new_offset);
                self.expect(valid, &result);
                if result.is_ok() {
                    if let MKind::Alias { offset, .. } = &mut self.model.regions[r].kind {
                        *offset = new_offset;
                    }
                }
                result
            }
            Act::Dirty(r, on) => {
                let r = self.region(r);
                let valid = matches!(m.regions[r].kind, MKind::Ram { .. });
                let result = self.space.set_dirty_logging(m.regions[r].id, on);
                self.expect(valid, &result);
                if result.is_ok() {
                    if let MKind::Ram { dirty, .. } = &mut self.model.regions[r].kind {
                        *dirty = on;
                    }
                }
                result
            }
            Act::Mirror(alias, priority) => {
                let alias = 10 + alias % 3;
                let MKind::Alias { target, offset } = m.regions[alias].kind else {
                    unreachable!("indices 10..=12 are aliases");
                };
                let placed = m.regions[0].children.iter().find(|c| c.index == target);
                match placed {
                    Some(c) => {
                        let at = c.offset + offset;
                        self.step(&Act::Add {
                            container: 0,
                            child: alias - 1,
                            offset: at / self.granule(alias),
                            priority,
                        })
                    }
                    None => Ok(()),
                }
            }
            Act::Transaction(ref acts) => {
                let saved = self.model.clone();
                let acts = acts.clone();
                self.space.begin_transaction();
                for inner in &acts {
                    // Invalid inner changes are rejected on their own; the rest go on.
                    let _ = self.step(inner);
                }
                let result = self.space.commit_transaction();
                if result.is_err() {
                    self.model = saved;
                }
                result
            }
        }
    }

    /// `set_address` / `set_priority`: the region is re-inserted as the newest child.
    fn replace(
        &mut self,
        r: usize,
        new_offset: Option<u64>,
        new_priority: Option<i32>,
    ) -> Result<(), Error> {
        let valid = self.model.regions[r].parent.is_some();
        let id = self.model.regions[r].id;
        let result = match (new_offset, new_priority) {
            (Some(o), _) => self.space.set_address(id, o),
            (None, p) => self.space.set_priority(id, p.unwrap_or(0)),
        };
        self.expect(valid, &result);
        if result.is_ok() {
            let (parent, pos) = self.model.position(r).unwrap();
            self.model.seq += 1;
            let seq = self.model.seq;
            let child = &mut self.model.regions[parent].children[pos];
            child.seq = seq;
            if let Some(o) = new_offset {
                child.offset = o;
            }
            if let Some(p) = new_priority {
                child.priority = p;
            }
        }
        result
    }

    fn expect(&self, valid: bool, result: &Result<(), Error>) {
        match result {
            Ok(()) => assert!(valid, "the space accepted a change the model rejects"),
            Err(Error::Listener { .. }) => assert!(valid, "refused a change that is invalid"),
            Err(e) => assert!(!valid, "the space rejected a valid change: {e}"),
        }
    }

    fn check(&self) {
        let view = self.space.flat_view();
        // Sorted, non-overlapping, merged, inside the universe.
        for pair in view.windows(2) {
            assert!(pair[0].end() <= u128::from(pair[1].guest_addr), "{pair:?}");
            let mergeable = pair[0].end() == u128::from(pair[1].guest_addr)
                && pair[0].region == pair[1].region
                && pair[0].kind == pair[1].kind
                && pair[0].offset_in_region + pair[0].size == pair[1].offset_in_region;
            assert!(!mergeable, "unmerged neighbours {pair:?}");
        }
        assert!(view
            .iter()
            .all(|s| s.size > 0 && s.end() <= u128::from(UNIVERSE)));

        // Brute force: every unit of the universe.
        for addr in (0..UNIVERSE).step_by(UNIT as usize) {
            let expected = self.model.lookup(0, i128::from(addr), false);
            let actual = self.space.lookup(addr).map(|s| {
                (
                    s.region,
                    s.offset_in_region + (addr - s.guest_addr),
                    s.kind,
                    s.dirty_log,
                )
            });
            assert_eq!(actual, expected, "at {addr:#x}");
        }

        // Listener models.
        for listener in self.listeners.iter().chain([&self.refuser]) {
            assert_eq!(listener.view(), view);
            assert!(!listener.0.lock().unwrap().in_update);
        }

        // Snapshot: whole pages of RAM/ROM, same host memory.
        let snapshot = self.space.memory_snapshot();
        let regions: Vec<(u64, u64, u64)> = snapshot
            .iter()
            .map(|r| (r.start_addr().0, r.len(), r.as_ptr() as u64))
            .collect();
        let expected: Vec<(u64, u64, u64)> = view
            .iter()
            .filter_map(Section::page_aligned)
            .map(|s| (s.guest_addr, s.size, s.host_addr))
            .collect();
        assert_eq!(regions, expected);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn flat_view_and_listeners_match_the_model(input in input()) {
        let mut harness = Harness::new(&input);
        harness.check();
        for (act, fail_after) in &input.steps {
            let view_before = harness.space.flat_view().to_vec();
            harness.refuser.arm(*fail_after);
            let result = harness.step(act);
            harness.refuser.arm(None);
            if let Err(Error::Listener { .. }) = result {
                assert_eq!(harness.space.flat_view(), &view_before[..], "refusal not undone");
            }
            assert!(!matches!(result, Err(Error::ListenerRollback { .. })));
            harness.check();
        }
    }
}
