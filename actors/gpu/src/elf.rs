//! Structural check of an ELF shared object before it is handed to the dynamic loader.
//!
//! glibc maps a library's segments as its program headers describe them; when the file is
//! truncated, the mapping runs past the end of the file and the first touch of those pages
//! kills the process with SIGBUS instead of making `dlopen` fail. So the loader first checks
//! that the headers and every loadable segment lie inside the file.

/// Checks an ELF image's header, program headers and loadable segments against its length.
/// Non-ELF files are reported as such (the host only loads ELF on Linux).
pub fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 16 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file (bad magic)".into());
    }
    let class64 = match bytes[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown ELF class {c}")),
    };
    let little = match bytes[5] {
        1 => true,
        2 => false,
        d => return Err(format!("unknown ELF data encoding {d}")),
    };
    let rd = |off: usize, n: usize| -> Result<u64, String> {
        let s = bytes.get(off..off + n).ok_or_else(|| {
            format!(
                "file truncated: header field at {off} beyond {} bytes",
                bytes.len()
            )
        })?;
        let mut v: u64 = 0;
        for i in 0..n {
            let b = if little { s[n - 1 - i] } else { s[i] };
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    };
    let word = if class64 { 8 } else { 4 };
    // e_type(16) e_machine(18) e_version(20) e_entry(24) e_phoff e_shoff e_flags e_ehsize
    // e_phentsize e_phnum e_shentsize e_shnum
    let phoff = rd(24 + word, word)?;
    let shoff = rd(24 + 2 * word, word)?;
    let base = 24 + 3 * word + 4; // after e_flags
    let phentsize = rd(base + 2, 2)?;
    let phnum = rd(base + 4, 2)?;
    let shentsize = rd(base + 6, 2)?;
    let shnum = rd(base + 8, 2)?;
    let len = bytes.len() as u64;
    let within = |off: u64, size: u64, what: &str| -> Result<(), String> {
        match off.checked_add(size) {
            Some(end) if end <= len => Ok(()),
            _ => Err(format!(
                "file truncated or corrupt: {what} at {off}+{size} beyond {len} bytes"
            )),
        }
    };
    within(phoff, phentsize * phnum, "program header table")?;
    if shnum > 0 {
        within(shoff, shentsize * shnum, "section header table")?;
    }
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        let p_type = rd(ph, 4)?;
        // p_offset / p_filesz positions differ between the 32- and 64-bit layouts.
        let (p_offset, p_filesz) = if class64 {
            (rd(ph + 8, 8)?, rd(ph + 32, 8)?)
        } else {
            (rd(ph + 4, 4)?, rd(ph + 16, 4)?)
        };
        const PT_LOAD: u64 = 1;
        const PT_DYNAMIC: u64 = 2;
        if p_type == PT_LOAD || p_type == PT_DYNAMIC {
            within(p_offset, p_filesz, &format!("segment {i}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn the_running_test_binary_passes_and_its_prefixes_fail() {
        let exe = std::env::current_exe().expect("exe");
        let bytes = std::fs::read(exe).expect("read");
        check(&bytes).expect("a complete ELF file passes");
        for cut in [10, 64, 4096, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                check(&bytes[..cut]).is_err(),
                "prefix of {cut} bytes passed"
            );
        }
        assert!(check(b"hello, world, not elf").is_err());
    }
}
