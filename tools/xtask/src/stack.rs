//! A static bound on a Thumb firmware image's stack, from its call graph.
//!
//! Each function's frame size comes from the `.stack_sizes` section that rustc writes with
//! `-Zemit-stack-sizes` (LLVM's figure for every function it compiled). The call graph comes
//! from the code itself: every `bl` and every `b`/`b.w` that lands on another function's first
//! instruction is an edge, and so is a `blx rN` whose register is loaded from a literal pool
//! holding a function's address. Other indirect calls (function pointers, trait objects) may
//! reach any function whose address appears in the image's data; each such call site gets an
//! edge to every one of them. A callee whose address never sits in data (a register spilled and
//! reloaded, an address passed in) is not seen: [`StackBound::indirect_calls`] counts those
//! sites.
//!
//! The bound is the deepest path from the reset handler, plus the deepest exception handler
//! with the frame the hardware stacks on entry (the extended, floating-point frame on the
//! targets with an FPU). What it cannot see, and says so in [`StackBound`]:
//! - functions without a `.stack_sizes` entry (hand-written assembly such as `memcpy` in
//!   compiler-builtins and cortex-m-rt's trampolines), counted as 0 bytes;
//! - stack adjusted at run time (`alloca`; Rust emits none);
//! - recursion: a cycle has no bound, and is reported instead of a figure.

// Addresses and sizes in a 32-bit ELF image fit u32.
#![allow(clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the call graph says about the worst-case stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackBound {
    /// Bytes, or `None` when the call graph has a cycle on a path from the roots.
    pub bytes: Option<u64>,
    /// The deepest path, outermost function first.
    pub path: Vec<String>,
    /// Functions on the reachable graph without a `.stack_sizes` entry (counted as 0).
    pub unknown_frames: Vec<String>,
    /// Indirect call sites reachable from the roots.
    pub indirect_calls: usize,
    /// Functions an indirect call may reach (their address is stored in the image).
    pub address_taken: usize,
    /// The cycle found, when there is one.
    pub cycle: Vec<String>,
}

struct Section<'a> {
    name: &'a str,
    kind: u32,
    flags: u32,
    addr: u32,
    data: &'a [u8],
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn cstr(bytes: &[u8], at: usize) -> &str {
    let tail = bytes.get(at..).unwrap_or_default();
    let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
    std::str::from_utf8(tail.get(..end).unwrap_or_default()).unwrap_or("?")
}

fn sections(elf: &[u8]) -> Result<Vec<Section<'_>>, String> {
    let bad = || "truncated ELF section table".to_string();
    let shoff = u32_at(elf, 0x20).ok_or_else(bad)? as usize;
    let shentsize = usize::from(u16_at(elf, 0x2E).ok_or_else(bad)?);
    let shnum = usize::from(u16_at(elf, 0x30).ok_or_else(bad)?);
    let shstrndx = usize::from(u16_at(elf, 0x32).ok_or_else(bad)?);
    let header = |i: usize| -> Result<(u32, u32, u32, u32, &[u8]), String> {
        let h = shoff + i * shentsize;
        let name = u32_at(elf, h).ok_or_else(bad)?;
        let kind = u32_at(elf, h + 4).ok_or_else(bad)?;
        let flags = u32_at(elf, h + 8).ok_or_else(bad)?;
        let addr = u32_at(elf, h + 12).ok_or_else(bad)?;
        let offset = u32_at(elf, h + 16).ok_or_else(bad)? as usize;
        let size = u32_at(elf, h + 20).ok_or_else(bad)? as usize;
        let data = if kind == 8 {
            &[][..]
        } else {
            elf.get(offset..offset + size).ok_or_else(bad)?
        };
        Ok((name, kind, flags, addr, data))
    };
    let names = header(shstrndx)?.4;
    (0..shnum)
        .map(|i| {
            let (name, kind, flags, addr, data) = header(i)?;
            Ok(Section {
                name: cstr(names, name as usize),
                kind,
                flags,
                addr,
                data,
            })
        })
        .collect()
}

fn uleb128(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A function: its name, code and frame size.
struct Function<'a> {
    name: &'a str,
    code: &'a [u8],
    frame: Option<u64>,
}

/// What one function's code does: the functions it calls and whether it calls indirectly.
#[derive(Default)]
struct Calls {
    direct: BTreeSet<u32>,
    indirect: usize,
}

/// Decodes the calls and branches of a Thumb function at `start`. `word` reads the image (for
/// literal pools).
///
/// At opt-level "z" LLVM often loads a callee's address from a literal pool into a register
/// once and calls it with `blx rN` several times; such a call whose register was loaded from a
/// literal holding a function's address counts as a direct call to it. Other `blx rN` are
/// indirect.
fn calls(
    start: u32,
    code: &[u8],
    functions: &BTreeMap<u32, Function<'_>>,
    word: &dyn Fn(u32) -> Option<u32>,
) -> Calls {
    let mut out = Calls::default();
    let end = start + code.len() as u32;
    let mut literals: HashMap<u32, BTreeSet<u32>> = HashMap::new();
    let mut literal = |reg: u32, at: u32| {
        if let Some(value) = word(at)
            && value & 1 == 1
            && functions.contains_key(&(value & !1))
        {
            literals.entry(reg).or_default().insert(value & !1);
        }
    };
    // First pass: registers loaded from literal pools with a function's address.
    let mut at = 0usize;
    while let Some(h1) = u16_at(code, at) {
        let pc = start + at as u32;
        let base = (pc + 4) & !3;
        if matches!(h1 >> 11, 0b11101..=0b11111) {
            // LDR.W Rt, [PC, #+-imm12]
            if let Some(h2) = u16_at(code, at + 2)
                && h1 & 0xFF7F == 0xF85F
            {
                let imm = u32::from(h2 & 0xFFF);
                let addr = if h1 & 0x80 != 0 {
                    base.wrapping_add(imm)
                } else {
                    base.wrapping_sub(imm)
                };
                literal(u32::from(h2 >> 12), addr);
            }
            at += 4;
        } else {
            // LDR Rt, [PC, #imm8 * 4]
            if h1 & 0xF800 == 0x4800 {
                literal(u32::from(h1 >> 8) & 7, base + (u32::from(h1) & 0xFF) * 4);
            }
            at += 2;
        }
    }
    let mut at = 0usize;
    while let Some(h1) = u16_at(code, at) {
        let pc = start + at as u32;
        let wide = matches!(h1 >> 11, 0b11101..=0b11111);
        if wide {
            let Some(h2) = u16_at(code, at + 2) else {
                break;
            };
            // BL (T1) and B.W (T4): the same 25-bit offset encoding.
            if h1 >> 11 == 0b11110 && (h2 & 0xD000 == 0xD000 || h2 & 0xD000 == 0x9000) {
                let s = u32::from(h1 >> 10) & 1;
                let j1 = u32::from(h2 >> 13) & 1;
                let j2 = u32::from(h2 >> 11) & 1;
                let i1 = !(j1 ^ s) & 1;
                let i2 = !(j2 ^ s) & 1;
                let imm = (s << 24)
                    | (i1 << 23)
                    | (i2 << 22)
                    | ((u32::from(h1) & 0x3FF) << 12)
                    | ((u32::from(h2) & 0x7FF) << 1);
                // Sign-extend from 25 bits.
                let offset = ((imm << 7) as i32) >> 7;
                let target = pc.wrapping_add(4).wrapping_add(offset as u32);
                let is_call = h2 & 0xD000 == 0xD000;
                if functions.contains_key(&target) && (is_call || !(start..end).contains(&target)) {
                    out.direct.insert(target);
                }
            }
            at += 4;
        } else {
            // BLX Rm: a call through a register. BX Rm other than LR: a tail call through one.
            let rm = u32::from(h1 >> 3) & 0xF;
            if h1 & 0xFF87 == 0x4780 || (h1 & 0xFF87 == 0x4700 && rm != 14) {
                match literals.get(&rm) {
                    Some(targets) => out.direct.extend(targets.iter().copied()),
                    None => out.indirect += 1,
                }
            }
            // B (T2) to another function: a tail call.
            if h1 >> 11 == 0b11100 {
                let offset = ((u32::from(h1) & 0x7FF) << 21) as i32 >> 20;
                let target = pc.wrapping_add(4).wrapping_add(offset as u32);
                if functions.contains_key(&target) && !(start..end).contains(&target) {
                    out.direct.insert(target);
                }
            }
            at += 2;
        }
    }
    out
}

/// The static stack bound of a Thumb ELF image built with `-Zemit-stack-sizes`. `fpu` says
/// whether exceptions stack the floating-point context (Cortex-M4F and up).
pub fn bound(elf: &[u8], fpu: bool) -> Result<StackBound, String> {
    let sections = sections(elf)?;
    let find = |name: &str| sections.iter().find(|s| s.name == name);
    let stack_sizes = find(".stack_sizes")
        .ok_or("no .stack_sizes section: the image was not built with -Zemit-stack-sizes")?;
    let symtab = find(".symtab").ok_or("no symbol table")?;
    let strtab = find(".strtab").ok_or("no string table")?;
    let code_of = |addr: u32, size: u32| -> &[u8] {
        sections
            .iter()
            .filter(|s| s.flags & 0x4 != 0 && s.kind != 8)
            .find(|s| s.addr <= addr && addr + size <= s.addr + s.data.len() as u32)
            .and_then(|s| {
                s.data
                    .get((addr - s.addr) as usize..(addr - s.addr + size) as usize)
            })
            .unwrap_or_default()
    };

    let mut frames = HashMap::new();
    let mut at = 0usize;
    while at + 4 <= stack_sizes.data.len() {
        let addr = u32_at(stack_sizes.data, at).ok_or("bad .stack_sizes")? & !1;
        at += 4;
        let size = uleb128(stack_sizes.data, &mut at).ok_or("bad .stack_sizes")?;
        frames.insert(addr, size);
    }

    let mut functions = BTreeMap::new();
    for entry in symtab.data.chunks_exact(16) {
        let name = u32_at(entry, 0).unwrap_or(0);
        let value = u32_at(entry, 4).unwrap_or(0) & !1;
        let size = u32_at(entry, 8).unwrap_or(0);
        let info = entry.get(12).copied().unwrap_or(0);
        if info & 0xF != 2 || size == 0 {
            continue; // not STT_FUNC
        }
        functions.entry(value).or_insert(Function {
            name: cstr(strtab.data, name as usize),
            code: code_of(value, size),
            frame: frames.get(&value).copied(),
        });
    }

    // Roots: the vector table's reset handler and exception handlers.
    let vectors = find(".vector_table").ok_or("no .vector_table section")?;
    let handlers: Vec<u32> = (1..vectors.data.len() / 4)
        .filter_map(|i| u32_at(vectors.data, i * 4))
        .map(|v| v & !1)
        .filter(|v| functions.contains_key(v))
        .collect();
    let reset = *handlers
        .first()
        .ok_or("no reset handler in the vector table")?;
    let exception_roots: BTreeSet<u32> = handlers.iter().skip(1).copied().collect();

    // Functions whose address is stored in data (vtables, function pointers; not the vector
    // table): what an unresolved indirect call may reach.
    let mut address_taken = BTreeSet::new();
    for s in sections.iter().filter(|s| {
        s.flags & 0x2 != 0 && s.flags & 0x4 == 0 && s.kind != 8 && s.name != ".vector_table"
    }) {
        // Thumb code addresses are 2-byte aligned, and so may their stored copies be.
        for at in (0..s.data.len().saturating_sub(3)).step_by(2) {
            let value = u32_at(s.data, at).unwrap_or(0);
            if value & 1 == 1 && functions.contains_key(&(value & !1)) {
                address_taken.insert(value & !1);
            }
        }
    }

    // Software never calls the reset or exception handlers: a value that happens to equal one
    // of their addresses (a constant in read-only data or a literal pool) is not a call target.
    let handlers_only: BTreeSet<u32> = handlers.iter().copied().collect();
    address_taken.retain(|a| !handlers_only.contains(a));

    let word = |addr: u32| {
        sections
            .iter()
            .filter(|s| s.flags & 0x2 != 0 && s.kind != 8)
            .find(|s| s.addr <= addr && addr + 4 <= s.addr + s.data.len() as u32)
            .and_then(|s| u32_at(s.data, (addr - s.addr) as usize))
    };
    let graph: BTreeMap<u32, Calls> = functions
        .iter()
        .map(|(&addr, f)| (addr, calls(addr, f.code, &functions, &word)))
        .collect();

    let mut walk = Walk {
        functions: &functions,
        graph: &graph,
        address_taken: &address_taken,
        not_called: &handlers_only,
        memo: HashMap::new(),
        on_path: Vec::new(),
        cycle: Vec::new(),
        unknown_frames: BTreeSet::new(),
        indirect: BTreeSet::new(),
    };
    let main_depth = walk.depth(reset);
    let mut deepest_handler: Option<(u64, u32)> = Some((0, reset));
    deepest_handler.take();
    for &h in &exception_roots {
        if let Some(d) = walk.depth(h)
            && deepest_handler.is_none_or(|(best, _)| d > best)
        {
            deepest_handler = Some((d, h));
        }
    }
    let name = |a: u32| functions.get(&a).map_or("?", |f| f.name).to_string();
    let cycle: Vec<String> = walk.cycle.iter().map(|&a| name(a)).collect();
    let exception_frame = if fpu { 104 } else { 32 };
    let bytes = match (main_depth, cycle.is_empty()) {
        (Some(d), true) => Some(d + deepest_handler.map_or(0, |(h, _)| h + exception_frame)),
        _ => None,
    };
    let mut path = Vec::new();
    let mut at = Some(reset);
    while let Some(a) = at {
        path.push(name(a));
        at = walk.memo.get(&a).and_then(|(_, next)| *next);
    }
    if let Some((_, h)) = deepest_handler {
        path.push(format!("+ exception: {}", name(h)));
    }
    Ok(StackBound {
        bytes,
        path,
        unknown_frames: walk.unknown_frames.iter().map(|&a| name(a)).collect(),
        indirect_calls: walk
            .indirect
            .iter()
            .filter_map(|a| graph.get(a))
            .map(|c| c.indirect)
            .sum(),
        address_taken: address_taken.len(),
        cycle,
    })
}

struct Walk<'g, 'a> {
    functions: &'g BTreeMap<u32, Function<'a>>,
    graph: &'g BTreeMap<u32, Calls>,
    address_taken: &'g BTreeSet<u32>,
    /// The reset and exception handlers, which no software calls.
    not_called: &'g BTreeSet<u32>,
    /// Deepest stack from a function down, and the callee on that path.
    memo: HashMap<u32, (u64, Option<u32>)>,
    on_path: Vec<u32>,
    cycle: Vec<u32>,
    unknown_frames: BTreeSet<u32>,
    indirect: BTreeSet<u32>,
}

impl Walk<'_, '_> {
    /// The deepest stack from `f` down; `None` on a cycle.
    fn depth(&mut self, f: u32) -> Option<u64> {
        if let Some((d, _)) = self.memo.get(&f) {
            return Some(*d);
        }
        if let Some(i) = self.on_path.iter().position(|&a| a == f) {
            if self.cycle.is_empty() {
                self.cycle = self.on_path.get(i..).unwrap_or_default().to_vec();
            }
            return None;
        }
        let frame = match self.functions.get(&f).and_then(|x| x.frame) {
            Some(frame) => frame,
            None => {
                self.unknown_frames.insert(f);
                0
            }
        };
        let calls = self.graph.get(&f);
        let mut callees: Vec<u32> = calls
            .map(|c| c.direct.iter().copied().collect())
            .unwrap_or_default();
        if calls.is_some_and(|c| c.indirect > 0) {
            self.indirect.insert(f);
            callees.extend(self.address_taken.iter().copied());
        }
        callees.retain(|c| !self.not_called.contains(c));
        self.on_path.push(f);
        let mut best = (0u64, None);
        let mut cyclic = false;
        for callee in callees {
            match self.depth(callee) {
                Some(d) if d > best.0 || best.1.is_none() => best = (d, Some(callee)),
                Some(_) => {}
                None => cyclic = true,
            }
        }
        self.on_path.pop();
        if cyclic {
            return None;
        }
        let total = frame + best.0;
        self.memo.insert(f, (total, best.1));
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_uleb128() {
        let mut at = 0;
        assert_eq!(uleb128(&[0xE5, 0x8E, 0x26], &mut at), Some(624_485));
        assert_eq!(at, 3);
        let mut at = 0;
        assert_eq!(uleb128(&[0x80], &mut at), None);
    }

    #[test]
    fn finds_bl_and_tail_calls_to_function_starts_only() {
        let mut functions = BTreeMap::new();
        for (addr, name) in [(0x100u32, "caller"), (0x200, "callee"), (0x80, "tail")] {
            functions.insert(
                addr,
                Function {
                    name,
                    code: &[],
                    frame: Some(8),
                },
            );
        }
        // At 0x100: `bl 0x200` (f000 f87e), `blx r3` (4798), `b.w 0x80` (f7ff bfbb).
        let code = [0x00, 0xF0, 0x7E, 0xF8, 0x98, 0x47, 0xFF, 0xF7, 0xBB, 0xBF];
        let c = calls(0x100, &code, &functions, &|_| None);
        assert_eq!(c.direct.iter().copied().collect::<Vec<_>>(), [0x80, 0x200]);
        assert_eq!(c.indirect, 1);
    }
}
