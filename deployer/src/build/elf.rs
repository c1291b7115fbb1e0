//! Just enough ELF to refuse a binary Lambda would only reject at invoke time: the wrong
//! machine, or one that needs a dynamic loader or shared libraries (glibc) at run time.

use stack::Architecture;
use thiserror::Error;

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub machine: u16,
    /// A `PT_INTERP` header: the binary needs a dynamic loader.
    pub interpreter: bool,
    /// `DT_NEEDED` entries: the binary needs shared libraries.
    pub needed_libraries: usize,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ElfError {
    #[error("not a 64-bit little-endian ELF executable")]
    NotElf64,
    #[error("truncated or malformed ELF: {0}")]
    Malformed(&'static str),
    #[error(
        "built for {found} but the function runs on {expected}: Lambda would fail only at invoke time"
    )]
    WrongMachine { expected: String, found: String },
    #[error(
        "not a static executable (it needs a dynamic loader or {0} shared libraries); Amazon Linux 2023 has glibc 2.34, so build for a musl target"
    )]
    Dynamic(usize),
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub fn inspect(b: &[u8]) -> Result<ElfInfo, ElfError> {
    if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err(ElfError::NotElf64);
    }
    let m = ElfError::Malformed;
    let machine = u16_at(b, 18).ok_or(m("header"))?;
    let phoff = usize::try_from(u64_at(b, 32).ok_or(m("header"))?).map_err(|_| m("header"))?;
    let phentsize = usize::from(u16_at(b, 54).ok_or(m("header"))?);
    let phnum = usize::from(u16_at(b, 56).ok_or(m("header"))?);
    if phentsize < 56 {
        return Err(m("program header size"));
    }
    let mut interpreter = false;
    let mut needed_libraries = 0;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = u32_at(b, ph).ok_or(m("program header"))?;
        match kind {
            PT_INTERP => interpreter = true,
            PT_DYNAMIC => {
                let off = u64_at(b, ph + 8).ok_or(m("program header"))? as usize;
                let size = u64_at(b, ph + 32).ok_or(m("program header"))? as usize;
                let mut at = off;
                while at + 16 <= off.saturating_add(size) {
                    let tag = u64_at(b, at).ok_or(m("dynamic section"))?;
                    if tag == DT_NULL {
                        break;
                    }
                    if tag == DT_NEEDED {
                        needed_libraries += 1;
                    }
                    at += 16;
                }
            }
            _ => {}
        }
    }
    Ok(ElfInfo {
        machine,
        interpreter,
        needed_libraries,
    })
}

pub fn machine_of(arch: Architecture) -> u16 {
    match arch {
        Architecture::Arm64 => EM_AARCH64,
        Architecture::X86_64 => EM_X86_64,
    }
}

fn machine_name(m: u16) -> String {
    match m {
        EM_AARCH64 => "aarch64 (arm64)".into(),
        EM_X86_64 => "x86_64".into(),
        other => format!("ELF machine {other}"),
    }
}

/// Accepts any executable for `arch`, static or not (for the local environment, which runs
/// it on this machine).
pub fn check_machine(b: &[u8], arch: Architecture) -> Result<ElfInfo, ElfError> {
    let info = inspect(b)?;
    let expected = machine_of(arch);
    if info.machine != expected {
        return Err(ElfError::WrongMachine {
            expected: machine_name(expected),
            found: machine_name(info.machine),
        });
    }
    Ok(info)
}

/// Accepts only a static executable for `arch` (what Lambda runs).
pub fn check(b: &[u8], arch: Architecture) -> Result<ElfInfo, ElfError> {
    let info = check_machine(b, arch)?;
    if info.interpreter || info.needed_libraries > 0 {
        return Err(ElfError::Dynamic(info.needed_libraries));
    }
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ELF64 header with `phnum` program headers of the given types; a PT_DYNAMIC
    /// header points at `needed` DT_NEEDED entries.
    pub(crate) fn crafted(machine: u16, program_headers: &[u32], needed: usize) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&2u16.to_le_bytes());
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(program_headers.len() as u16).to_le_bytes());
        let dyn_at = 64 + 56 * program_headers.len();
        for &kind in program_headers {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&kind.to_le_bytes());
            if kind == PT_DYNAMIC {
                ph[8..16].copy_from_slice(&(dyn_at as u64).to_le_bytes());
                ph[32..40].copy_from_slice(&(16 * (needed as u64 + 1)).to_le_bytes());
            }
            b.extend(ph);
        }
        for _ in 0..needed {
            b.extend(DT_NEEDED.to_le_bytes());
            b.extend(7u64.to_le_bytes());
        }
        b.extend([0u8; 16]);
        b
    }

    #[test]
    fn accepts_a_static_binary_of_the_right_machine() {
        let arm = crafted(EM_AARCH64, &[1, PT_DYNAMIC], 0);
        assert!(check(&arm, Architecture::Arm64).is_ok());
        let x86 = crafted(EM_X86_64, &[1], 0);
        assert!(check(&x86, Architecture::X86_64).is_ok());
    }

    #[test]
    fn refuses_the_wrong_machine() {
        let x86 = crafted(EM_X86_64, &[1], 0);
        let err = check(&x86, Architecture::Arm64).unwrap_err();
        assert!(matches!(err, ElfError::WrongMachine { .. }));
        assert!(
            err.to_string()
                .contains("built for x86_64 but the function runs on aarch64")
        );
    }

    #[test]
    fn refuses_dynamic_binaries() {
        let glibc = crafted(EM_X86_64, &[1, PT_INTERP, PT_DYNAMIC], 2);
        assert_eq!(
            check(&glibc, Architecture::X86_64),
            Err(ElfError::Dynamic(2))
        );
        let needs_libs = crafted(EM_X86_64, &[PT_DYNAMIC], 1);
        assert_eq!(
            check(&needs_libs, Architecture::X86_64),
            Err(ElfError::Dynamic(1))
        );
    }

    #[test]
    fn host_checks_accept_dynamic_binaries_but_not_the_wrong_machine() {
        let glibc = crafted(EM_X86_64, &[1, PT_INTERP, PT_DYNAMIC], 2);
        let info = check_machine(&glibc, Architecture::X86_64).unwrap();
        assert!(info.interpreter);
        assert_eq!(info.needed_libraries, 2);
        assert!(matches!(
            check_machine(&glibc, Architecture::Arm64),
            Err(ElfError::WrongMachine { .. })
        ));
        assert_eq!(inspect(b"#!/bin/sh\n"), Err(ElfError::NotElf64));
    }

    #[test]
    fn refuses_non_elf_and_truncated() {
        assert_eq!(inspect(b"#!/bin/sh\n"), Err(ElfError::NotElf64));
        let mut b = crafted(EM_X86_64, &[1, 1], 0);
        b.truncate(80);
        assert!(matches!(inspect(&b), Err(ElfError::Malformed(_))));
    }

    #[test]
    fn reads_a_real_binary() {
        // The test binary itself: a real ELF for this host.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let info = inspect(&me).unwrap();
        let host = if cfg!(target_arch = "aarch64") {
            EM_AARCH64
        } else {
            EM_X86_64
        };
        assert_eq!(info.machine, host);
    }
}
