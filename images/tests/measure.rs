//! Reproduces every expected value in `shared/testdata/measure/` (SEV-SNP and TDX).
//!
//! Each case is checked on its own, and the test fails listing every case that did not
//! reproduce (by name), so one mismatch does not hide the others.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use veil_images::measure::MeasureError;
use veil_images::measure::gctx::{Gctx, PageType};
use veil_images::measure::ovmf::{Firmware, SevSection, SevSectionType};
use veil_images::measure::sev_hashes::SevHashes;
use veil_images::measure::snp::{self, SnpInputs, SnpLayout, SnpParts, SvsmInputs};
use veil_images::measure::vmsa::{self, VmmType, Vmsas};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/measure")
}

fn load(name: &str) -> Value {
    let path = testdata().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// `/dev/null` is an empty file; other paths are relative to the testdata folder.
fn file(path: &str) -> Vec<u8> {
    if path == "/dev/null" {
        return Vec::new();
    }
    let p = testdata().join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn opt_str<'a>(case: &'a Value, key: &str) -> Option<&'a str> {
    case.get(key).and_then(Value::as_str)
}

fn hex_u64(text: &str) -> u64 {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).unwrap()
}

/// A number given as JSON number or hex string.
fn num(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(s) => hex_u64(s),
        other => panic!("not a number: {other}"),
    }
}

/// Collects failures; panics at the end with all of them.
#[derive(Default)]
struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    fn check(&mut self, name: &str, got: impl AsRef<[u8]>, expected_hex: &str) {
        let got = hex::encode(got);
        if got == expected_hex.to_ascii_lowercase() {
            self.passed += 1;
        } else {
            self.failed
                .push(format!("{name}: expected {expected_hex}, got {got}"));
        }
    }

    fn fail(&mut self, name: &str, why: impl std::fmt::Display) {
        self.failed.push(format!("{name}: {why}"));
    }

    fn ok(&mut self) {
        self.passed += 1;
    }

    fn finish(self, group: &str) {
        eprintln!(
            "{group}: {} checks reproduced, {} failed",
            self.passed,
            self.failed.len()
        );
        assert!(
            self.failed.is_empty(),
            "{group}: {} failed:\n{}",
            self.failed.len(),
            self.failed.join("\n")
        );
    }
}

fn vmm_of(case: &Value) -> VmmType {
    opt_str(case, "vmm_type").unwrap_or("QEMU").parse().unwrap()
}

fn sig_of(case: &Value) -> Option<u32> {
    if let Some(sig) = opt_str(case, "vcpu_sig") {
        return Some(hex_u64(sig) as u32);
    }
    opt_str(case, "vcpu_type").map(|t| vmsa::vcpu_type_signature(t).unwrap())
}

/// Run one sev-snp-measure case (also the error cases): the digest as bytes.
fn run_case(case: &Value) -> Result<Vec<u8>, MeasureError> {
    let ovmf = file(opt_str(case, "ovmf").unwrap());
    let kernel = opt_str(case, "kernel").map(file);
    let initrd = opt_str(case, "initrd").map(file);
    let append = opt_str(case, "append");
    let vcpus = case["vcpus"].as_u64().unwrap() as u32;
    let guest_features = opt_str(case, "guest_features").map_or(0, hex_u64);
    let vmm = vmm_of(case);
    let sig = sig_of(case);
    match case["mode"].as_str().unwrap() {
        "SEV" => snp::sev_launch_digest(&ovmf, kernel.as_deref(), initrd.as_deref(), append)
            .map(|d| d.to_vec()),
        "SEV_ES" => snp::sev_es_launch_digest(
            &ovmf,
            kernel.as_deref(),
            initrd.as_deref(),
            append,
            vcpus,
            sig,
            vmm,
        )
        .map(|d| d.to_vec()),
        "SEV_SNP" | "SEV_SNP_SVSM" => {
            let svsm_image = opt_str(case, "svsm").map(file);
            let ovmf_hash = opt_str(case, "snp_ovmf_hash")
                .map(|h| <[u8; 48]>::try_from(hex::decode(h).unwrap()).unwrap());
            let inputs = SnpInputs {
                ovmf: &ovmf,
                ovmf_hash,
                kernel: kernel.as_deref(),
                initrd: initrd.as_deref(),
                append,
                vcpus,
                vcpu_sig: sig,
                guest_features,
                vmm,
                svsm: svsm_image.as_deref().map(|image| SvsmInputs {
                    image,
                    ovmf_vars_size: case["ovmf_vars_size"].as_u64().unwrap(),
                }),
            };
            snp::launch_digest(&inputs).map(|d| d.to_vec())
        }
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn sev_snp_measure_cases() {
    let doc = load("snp-launch-digest-cases.json");
    let cases = doc["sev_snp_measure_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 23);
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        match run_case(case) {
            Ok(digest) => report.check(
                name,
                digest,
                case["expected_launch_digest"].as_str().unwrap(),
            ),
            Err(e) => report.fail(name, format!("error: {e}")),
        }
    }
    assert_eq!(report.passed + report.failed.len(), 23);
    report.finish("sev_snp_measure_cases");
}

#[test]
fn sev_snp_measure_error_cases() {
    let doc = load("snp-launch-digest-cases.json");
    let cases = doc["sev_snp_measure_error_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    let mut report = Report::default();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let expected = case["expected_error"].as_str().unwrap();
        match run_case(case) {
            Ok(d) => report.fail(
                name,
                format!(
                    "expected the error {expected:?}, got digest {}",
                    hex::encode(d)
                ),
            ),
            Err(e) if e.to_string() == expected => report.ok(),
            Err(e) => report.fail(
                name,
                format!("expected the error {expected:?}, got {e:?} ({e})"),
            ),
        }
    }
    report.finish("sev_snp_measure_error_cases");
}

/// The per-vCPU VMSA digests each case lists, and the byte-exact VMSA files.
#[test]
fn vmsa_pages() {
    let doc = load("snp-launch-digest-cases.json");
    let mut report = Report::default();
    for case in doc["sev_snp_measure_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let Some(expected) = case["vmsa_page_sha384_in_order"].as_array() else {
            continue;
        };
        let mode = case["mode"].as_str().unwrap();
        let vcpus = case["vcpus"].as_u64().unwrap() as u32;
        let vmm = vmm_of(case);
        let sig = sig_of(case).unwrap_or(0);
        let ovmf = file(opt_str(case, "ovmf").unwrap());
        let pages: Vec<Vec<u8>> = if mode == "SEV_SNP_SVSM" {
            let svsm = file(opt_str(case, "svsm").unwrap());
            let svsm_fw = Firmware::parse(&svsm).unwrap();
            let fw = Firmware::parse(&ovmf).unwrap();
            let gpa = fw.gpa() - case["ovmf_vars_size"].as_u64().unwrap() - svsm.len() as u64;
            let eip = gpa + u64::from(svsm_fw.svsm_launch_offset().unwrap().unwrap());
            (0..vcpus)
                .map(|_| vmsa::svsm_save_area(eip, sig).to_vec())
                .collect()
        } else {
            let features = if mode == "SEV_SNP" {
                opt_str(case, "guest_features").map_or(0, hex_u64)
            } else {
                0
            };
            let eip = Firmware::parse(&ovmf).unwrap().sev_es_reset_eip().unwrap();
            let v = Vmsas::reset(eip, features, sig, vmm);
            v.pages(vcpus).map(|p| p.to_vec()).collect()
        };
        assert_eq!(pages.len(), expected.len(), "{name}: VMSA count");
        for (i, (page, want)) in pages.iter().zip(expected).enumerate() {
            report.check(
                &format!("{name} vmsa[{i}] sha384"),
                ring_sha384(page),
                want.as_str().unwrap(),
            );
        }
        if let Some(files) = case.get("vmsa_files").and_then(Value::as_array) {
            for f in files {
                let f = f.as_str().unwrap();
                let want = file(f);
                let idx = usize::from(f.ends_with(".ap.vmsa.bin"));
                if pages[idx] == want {
                    report.ok();
                } else {
                    let diff: Vec<String> = (0..4096)
                        .filter(|&i| pages[idx][i] != want[i])
                        .take(8)
                        .map(|i| format!("{i:#x}: {:02x} != {:02x}", pages[idx][i], want[i]))
                        .collect();
                    report.fail(
                        &format!("{name} {f}"),
                        format!("VMSA bytes differ: {diff:?}"),
                    );
                }
            }
        }
    }
    report.finish("vmsa_pages");
}

fn ring_sha384(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA384, data)
        .as_ref()
        .to_vec()
}

fn section_type_name(t: SevSectionType) -> &'static str {
    match t {
        SevSectionType::SnpSecMem => "SNP_SEC_MEM",
        SevSectionType::SnpSecrets => "SNP_SECRETS",
        SevSectionType::Cpuid => "CPUID",
        SevSectionType::SvsmCaa => "SVSM_CAA",
        SevSectionType::SnpKernelHashes => "SNP_KERNEL_HASHES",
        SevSectionType::Other(_) => "OTHER",
    }
}

fn guid_text(le: &[u8; 16]) -> String {
    let d1 = u32::from_le_bytes(le[0..4].try_into().unwrap());
    let d2 = u16::from_le_bytes(le[4..6].try_into().unwrap());
    let d3 = u16::from_le_bytes(le[6..8].try_into().unwrap());
    format!(
        "{d1:08x}-{d2:04x}-{d3:04x}-{}-{}",
        hex::encode(&le[8..10]),
        hex::encode(&le[10..16])
    )
}

/// `sev_snp_measure_intermediate`: the OVMF hashes, the parsed footer tables and
/// metadata, the vCPU signature table; `sev_snp_measure_step_traces`.
#[test]
fn intermediate_values_and_traces() {
    let doc = load("snp-launch-digest-cases.json");
    let inter = &doc["sev_snp_measure_intermediate"];
    let mut report = Report::default();
    for (key, value) in inter.as_object().unwrap() {
        if let Some(inner) = key
            .strip_prefix("calc_snp_ovmf_hash(")
            .and_then(|k| k.strip_suffix(')'))
        {
            let data = file(&format!("sev-snp-measure/fixtures/{inner}"));
            report.check(key, snp::ovmf_hash(&data).unwrap(), value.as_str().unwrap());
            continue;
        }
        let Some(path) = value.get("file").and_then(Value::as_str) else {
            continue;
        };
        let data = file(path);
        let fw = match Firmware::parse(&data) {
            Ok(fw) => fw,
            Err(e) => {
                report.fail(key, e);
                continue;
            }
        };
        // The SVSM image sits below the firmware and its variable store.
        let gpa = if key.starts_with("svsm.bin") {
            let ovmf = file("sev-snp-measure/fixtures/svsm_ovmf.fd");
            Firmware::parse(&ovmf).unwrap().gpa() - 540_672 - data.len() as u64
        } else {
            fw.gpa()
        };
        let check_eq = |report: &mut Report, what: &str, got: String, want: String| {
            if got == want {
                report.ok()
            } else {
                report.fail(
                    &format!("{key} {what}"),
                    format!("expected {want}, got {got}"),
                )
            }
        };
        check_eq(
            &mut report,
            "gpa",
            format!("{gpa:#x}"),
            value["gpa"].as_str().unwrap().to_owned(),
        );
        let mut got_guids: Vec<String> = fw.entry_guids().iter().map(guid_text).collect();
        got_guids.sort();
        let want_guids: Vec<String> = value["footer_table_guids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().to_owned())
            .collect();
        check_eq(
            &mut report,
            "footer guids",
            format!("{got_guids:?}"),
            format!("{want_guids:?}"),
        );
        let eip = if key.starts_with("svsm.bin") {
            gpa + u64::from(fw.svsm_launch_offset().unwrap().unwrap())
        } else {
            u64::from(fw.sev_es_reset_eip().unwrap())
        };
        check_eq(
            &mut report,
            "reset eip",
            format!("{eip:#x}"),
            value["sev_es_reset_eip"].as_str().unwrap().to_owned(),
        );
        let hashes_gpa = fw
            .sev_hashes_table_gpa()
            .unwrap()
            .map(|g| format!("{g:#x}"));
        check_eq(
            &mut report,
            "hashes table gpa",
            format!("{hashes_gpa:?}"),
            format!(
                "{:?}",
                value["sev_hashes_table_gpa"].as_str().map(str::to_owned)
            ),
        );
        let got: Vec<String> = fw
            .sev_metadata()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{:#x} {:#x} {}",
                    s.gpa,
                    s.size,
                    section_type_name(s.section_type)
                )
            })
            .collect();
        let want: Vec<String> = value["snp_metadata_sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {} {}",
                    s["gpa"].as_str().unwrap(),
                    s["size"].as_str().unwrap(),
                    s["section_type_name"].as_str().unwrap()
                )
            })
            .collect();
        check_eq(
            &mut report,
            "metadata sections",
            format!("{got:?}"),
            format!("{want:?}"),
        );
    }
    for (name, sig) in inter["cpu_sig_examples"].as_object().unwrap() {
        let got = vmsa::vcpu_type_signature(name)
            .map(|s| format!("{s:#x}"))
            .unwrap_or_else(|e| e.to_string());
        if got == sig.as_str().unwrap() {
            report.ok()
        } else {
            report.fail(&format!("cpu_sig {name}"), format!("got {got}"))
        }
    }
    for t in inter["cpu_sig_function_tests"].as_array().unwrap() {
        let got = vmsa::cpu_sig(
            num(&t["family"]) as u32,
            num(&t["model"]) as u32,
            num(&t["stepping"]) as u32,
        );
        let want = t["sig"].as_str().unwrap();
        if format!("{got:#x}") == want {
            report.ok()
        } else {
            report.fail("cpu_sig()", format!("{t}: got {got:#x}"))
        }
    }

    // Step traces: replay the chain step by step.
    let traces = &doc["sev_snp_measure_step_traces"];
    let ovmf = file("sev-snp-measure/fixtures/ovmf_AmdSev_suffix.bin");
    let fw = Firmware::parse(&ovmf).unwrap();
    let layout = SnpLayout::from_firmware(&fw).unwrap();
    for (case_name, append, vcpus) in [
        ("test_snp_default", "console=ttyS0 loglevel=7", 1u32),
        ("test_snp_with_multiple_vcpus_default", "", 4),
    ] {
        let steps = traces[case_name].as_array().unwrap();
        let hashes = SevHashes::new(&[], Some(&[]), Some(append));
        let page = hashes
            .page(layout.sev_hashes_table_gpa.unwrap() as usize & 0xFFF)
            .unwrap();
        let mut gctx = Gctx::new();
        gctx.update_normal_pages(fw.gpa(), &ovmf).unwrap();
        let mut lds = vec![gctx.ld()];
        for s in &layout.sections {
            snp::update_metadata(
                &mut gctx,
                std::slice::from_ref(s),
                Some(&page),
                VmmType::Qemu,
            )
            .unwrap();
            lds.push(gctx.ld());
        }
        let v = Vmsas::reset(layout.sev_es_reset_eip, 0x21, 0x80_0F12, VmmType::Qemu);
        for p in v.pages(vcpus) {
            gctx.update_vmsa_page(p);
            lds.push(gctx.ld());
        }
        assert_eq!(lds.len(), steps.len(), "{case_name}: number of steps");
        for (ld, step) in lds.iter().zip(steps) {
            report.check(
                &format!("{case_name} after {}", step["after"].as_str().unwrap()),
                ld,
                step["ld"].as_str().unwrap(),
            );
        }
    }
    let hp = &traces["test_snp_default_hashes_page"];
    let hashes = SevHashes::new(&[], Some(&[]), Some("console=ttyS0 loglevel=7"));
    let page = hashes
        .page(hex_u64(hp["offset_in_page"].as_str().unwrap()) as usize)
        .unwrap();
    report.check(
        "hashes page sha384",
        ring_sha384(&page),
        hp["page_sha384"].as_str().unwrap(),
    );
    report.check(
        "hashes page bytes at 0xc00",
        &page[0xC00..0xC00 + 176],
        hp["nonzero_bytes_hex_at_0xc00"].as_str().unwrap(),
    );

    // The per-case SEV hashes entries and 176-byte tables.
    for case in doc["sev_snp_measure_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let Some(sh) = case.get("sev_hashes") else {
            continue;
        };
        let kernel = file(opt_str(case, "kernel").unwrap());
        let initrd = opt_str(case, "initrd").map(file);
        let h = SevHashes::new(&kernel, initrd.as_deref(), opt_str(case, "append"));
        report.check(
            &format!("{name} kernel_sha256"),
            h.kernel,
            sh["kernel_sha256"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} initrd_sha256"),
            h.initrd,
            sh["initrd_sha256"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} cmdline_sha256"),
            h.cmdline,
            sh["cmdline_sha256"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} table"),
            h.table(),
            sh["table_hex"].as_str().unwrap(),
        );
    }
    for (path, meta) in doc["sev_snp_measure_fixture_files"].as_object().unwrap() {
        let data = file(path);
        report.check(
            path,
            ring::digest::digest(&ring::digest::SHA256, &data).as_ref(),
            meta["sha256"].as_str().unwrap(),
        );
    }
    report.finish("intermediate_values_and_traces");
}

fn parse_sections(v: &Value) -> Vec<SevSection> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| SevSection {
            gpa: num(&s["gpa"]) as u32,
            size: num(&s["size"]) as u32,
            section_type: SevSectionType::from_u32(num(&s["section_type"]) as u32),
        })
        .collect()
}

fn arr32(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

fn arr48(hex_text: &str) -> [u8; 48] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

/// dstack's vectors: the hardware-signed Milan report, the drift vector, one GCTX step,
/// the synthetic firmware and the hashes-page layout.
#[test]
fn dstack_cases() {
    let doc = load("snp-launch-digest-cases.json");
    let mut report = Report::default();
    for case in doc["dstack_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let input = &case["input"];
        match name {
            "dstack_real_fixture_recomputes_measurement"
            | "dstack_measurement_vector_does_not_drift" => {
                let cmdline = input["base_cmdline"].as_str().unwrap().trim();
                let cmdline_sha = veil_images::measure::sev_hashes::cmdline_sha256(cmdline);
                report.check(
                    &format!("{name} cmdline_sha256"),
                    cmdline_sha,
                    case["cmdline_sha256"].as_str().unwrap(),
                );
                let layout = SnpLayout {
                    sections: parse_sections(&input["ovmf_sections"]),
                    sev_es_reset_eip: num(&input["sev_es_reset_eip"]) as u32,
                    sev_hashes_table_gpa: Some(num(&input["sev_hashes_table_gpa"]) as u32),
                };
                let hashes = SevHashes {
                    kernel: arr32(input["kernel_hash"].as_str().unwrap()),
                    initrd: arr32(input["initrd_hash"].as_str().unwrap()),
                    cmdline: cmdline_sha,
                };
                let sig = vmsa::vcpu_type_signature(input["vcpu_type"].as_str().unwrap()).unwrap();
                let parts = SnpParts {
                    ovmf_hash: arr48(input["ovmf_hash"].as_str().unwrap()),
                    layout: &layout,
                    hashes: Some(hashes),
                    vcpus: num(&input["vcpus"]) as u32,
                    vcpu_sig: Some(sig),
                    guest_features: num(&input["guest_features"]),
                    vmm: VmmType::Qemu,
                };
                match snp::launch_digest_from_parts(&parts) {
                    Ok(d) => {
                        report.check(name, d, case["expected_launch_digest"].as_str().unwrap())
                    }
                    Err(e) => report.fail(name, e),
                }
            }
            "dstack_gctx_update_is_deterministic" => {
                let mut g = Gctx::from_seed(arr48(input["seed_ld"].as_str().unwrap()));
                let contents = ring_sha384(b"page");
                let want_contents = input["contents_digest"]
                    .as_str()
                    .unwrap()
                    .rsplit(' ')
                    .next()
                    .unwrap();
                report.check(&format!("{name} contents"), &contents, want_contents);
                assert_eq!(num(&input["page_type"]), 1);
                g.update(
                    PageType::Normal,
                    hex_u64(input["gpa"].as_str().unwrap()),
                    &contents.try_into().unwrap(),
                );
                report.check(name, g.ld(), case["expected_ld"].as_str().unwrap());
            }
            "dstack_synthetic_ovmf_launch_digest" => {
                let data = file(input["ovmf"].as_str().unwrap());
                report.check(
                    &format!("{name} file sha256"),
                    ring::digest::digest(&ring::digest::SHA256, &data).as_ref(),
                    input["ovmf_sha256"].as_str().unwrap(),
                );
                let fw = Firmware::parse(&data).unwrap();
                let exp = &case["expected_parse"];
                let layout = SnpLayout::from_firmware(&fw);
                match layout {
                    Ok(layout) => {
                        let got = format!(
                            "{:#x} {:#x} {:?}",
                            layout.sev_hashes_table_gpa.unwrap_or(0),
                            layout.sev_es_reset_eip,
                            layout
                                .sections
                                .iter()
                                .map(|s| format!(
                                    "{:#x} {:#x} {}",
                                    s.gpa,
                                    s.size,
                                    section_type_name(s.section_type)
                                ))
                                .collect::<Vec<_>>()
                        );
                        let want = format!(
                            "{} {} {:?}",
                            exp["sev_hashes_table_gpa"].as_str().unwrap(),
                            exp["sev_es_reset_eip"].as_str().unwrap(),
                            exp["sections"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .map(|s| format!(
                                    "{} {} {}",
                                    s[0].as_str().unwrap(),
                                    s[1].as_str().unwrap(),
                                    s[2].as_str().unwrap()
                                ))
                                .collect::<Vec<_>>()
                        );
                        if got == want {
                            report.ok()
                        } else {
                            report.fail(
                                &format!("{name} parse"),
                                format!("expected {want}, got {got}"),
                            )
                        }
                    }
                    Err(e) => report.fail(&format!("{name} parse"), e),
                }
                assert_eq!(hex_u64(input["gpa"].as_str().unwrap()), fw.gpa());
                report.check(
                    name,
                    snp::ovmf_hash(&data).unwrap(),
                    case["expected_ovmf_ld"].as_str().unwrap(),
                );
            }
            "dstack_builds_sev_hashes_page_at_requested_offset" => {
                let h = SevHashes::new(&[], None, Some(input["append"].as_str().unwrap()));
                let h = SevHashes {
                    kernel: arr32(input["kernel_hash"].as_str().unwrap()),
                    ..h
                };
                let off = hex_u64(input["page_offset"].as_str().unwrap()) as usize;
                let page = h.page(off).unwrap();
                let exp = &case["expected"];
                let mut ok = page[..off].iter().all(|&b| b == 0);
                ok &= hex::encode(&page[off..off + 16])
                    == exp["bytes_0x080_0x090"]
                        .as_str()
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap();
                ok &= u64::from(u16::from_le_bytes([page[off + 16], page[off + 17]]))
                    == num(&exp["u16_at_0x090"]);
                ok &= hex::encode(&page[off + 18..off + 34])
                    == exp["bytes_0x092_0x0a2"]
                        .as_str()
                        .unwrap()
                        .split(' ')
                        .next()
                        .unwrap();
                let initrd_at = off + 68 + 18;
                ok &= hex::encode(&page[initrd_at..initrd_at + 32])
                    == exp["initrd_hash_at_0x80+68+18"].as_str().unwrap();
                if ok {
                    report.ok()
                } else {
                    report.fail(name, "hashes page layout differs")
                }
            }
            other => report.fail(other, "unknown dstack case (not handled by this test)"),
        }
    }
    report.finish("dstack_cases");
}

// ---------------------------------------------------------------------------------
// Intel TDX
// ---------------------------------------------------------------------------------

use veil_images::measure::ovmf::TdvfSectionType;
use veil_images::measure::tdx::{self, PageAddOrder, TdxInputs};

fn tdx_type_name(t: TdvfSectionType) -> &'static str {
    match t {
        TdvfSectionType::Bfv => "0 BFV",
        TdvfSectionType::Cfv => "1 CFV",
        TdvfSectionType::TdHob => "2 TD_HOB",
        TdvfSectionType::TempMem => "3 TEMP_MEM",
        TdvfSectionType::Other(_) => "other",
    }
}

fn attr_name(a: u32) -> &'static str {
    match a {
        0 => "0x0",
        1 => "0x1 MR_EXTEND",
        _ => "other",
    }
}

/// The collector's Debian OVMF + memtest86+ case: TDVF sections, MRTD both orders, the
/// TD HOB bytes and digest for every RAM size, Authenticode before/after QEMU's patch,
/// cmdline/initrd digests, RTMR1 and RTMR2, and the RTMR0 formula check.
#[test]
fn tdx_reference_tool_cases() {
    let doc = load("tdx-measurement-cases.json");
    let quote_case = &doc["hardware_quote_cases"][0];
    let mut report = Report::default();
    for case in doc["reference_tool_generated_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let inputs = &case["inputs"];
        let ovmf = file(inputs["firmware"]["path"].as_str().unwrap());
        let kernel = file(inputs["kernel"]["path"].as_str().unwrap());
        let initrd = file(inputs["initrd"]["path"].as_str().unwrap());
        for (what, data) in [
            ("firmware", &ovmf),
            ("kernel", &kernel),
            ("initrd", &initrd),
        ] {
            report.check(
                &format!("{name} {what} sha256"),
                ring::digest::digest(&ring::digest::SHA256, data).as_ref(),
                inputs[what]["sha256"].as_str().unwrap(),
            );
        }
        let fw = Firmware::parse(&ovmf).unwrap();
        let sections = fw.tdvf_sections().unwrap();
        let got: Vec<String> = sections
            .iter()
            .map(|s| {
                format!(
                    "{:#x} {:#x} {} {}",
                    s.gpa,
                    s.mem_size,
                    tdx_type_name(s.section_type),
                    attr_name(s.attributes)
                )
            })
            .collect();
        let want: Vec<String> = case["tdvf_sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{} {} {} {}",
                    s["gpa"].as_str().unwrap(),
                    s["mem_size"].as_str().unwrap(),
                    s["type"].as_str().unwrap(),
                    s["attributes"].as_str().unwrap()
                )
            })
            .collect();
        if got == want {
            report.ok()
        } else {
            report.fail(
                &format!("{name} tdvf_sections"),
                format!("expected {want:?}, got {got:?}"),
            )
        }
        for (s, w) in sections
            .iter()
            .zip(case["tdvf_sections"].as_array().unwrap())
        {
            if let Some(off) = w.get("data_offset") {
                let ok = format!("{:#x}", s.data_offset) == off.as_str().unwrap()
                    && format!("{:#x}", s.raw_size) == w["raw_size"].as_str().unwrap();
                if ok {
                    report.ok()
                } else {
                    report.fail(
                        &format!("{name} section data_offset/raw_size"),
                        format!("{s:?} vs {w}"),
                    )
                }
            }
        }

        let st = &case["expected_static"];
        let two = tdx::mrtd(&fw, PageAddOrder::TwoPass).unwrap();
        let single = tdx::mrtd(&fw, PageAddOrder::SinglePass).unwrap();
        report.check(
            &format!("{name} mrtd_two_pass"),
            two,
            st["mrtd_two_pass"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} mrtd_single_pass"),
            single,
            st["mrtd_single_pass"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} td_hob_witness_v1"),
            tdx::td_hob_witness(&sections).unwrap(),
            st["td_hob_witness_v1"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} kernel_authenticode_unpatched"),
            tdx::authenticode_sha384(&kernel).unwrap(),
            st["kernel_authenticode_unpatched"].as_str().unwrap(),
        );
        let cmdline = tdx::measured_cmdline(inputs["metadata_cmdline"].as_str(), true);
        assert_eq!(
            cmdline,
            inputs["measured_cmdline"].as_str().unwrap(),
            "{name}: measured cmdline"
        );
        report.check(
            &format!("{name} cmdline_sha384"),
            tdx::cmdline_sha384(&cmdline),
            st["cmdline_sha384"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} initrd_sha384"),
            ring_sha384(&initrd),
            st["initrd_sha384"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} cfv_sha384"),
            tdx::cfv_sha384(&fw).unwrap(),
            st["cfv_sha384_real_for_this_firmware"].as_str().unwrap(),
        );
        let cbor = &st["measurement_tdx_cbor_decoded"];
        report.check(
            &format!("{name} cbor two_pass"),
            two,
            cbor["tdvf"]["mrtd"]["two_pass"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} cbor single_pass"),
            single,
            cbor["tdvf"]["mrtd"]["single_pass"].as_str().unwrap(),
        );

        // RTMR0 formula inputs, read from the real quote's event log (CFV, ACPI, Boot0000).
        let events = quote_case["event_log"].as_array().unwrap();
        let digest_of = |pred: &dyn Fn(&Value) -> bool| -> [u8; 48] {
            arr48(
                events.iter().find(|e| pred(e)).unwrap()["digest"]
                    .as_str()
                    .unwrap(),
            )
        };
        let cfv_fixed = digest_of(&|e| e["event_type_name"] == "EV_EFI_PLATFORM_FIRMWARE_BLOB2");
        let acpi = [
            digest_of(&|e| e["event"] == "acpi-loader"),
            digest_of(&|e| e["event"] == "acpi-rsdp"),
            digest_of(&|e| e["event"] == "acpi-tables"),
        ];
        let boot0000 = arr48(
            events
                .iter()
                .filter(|e| e["event_type_name"] == "EV_EFI_VARIABLE_BOOT")
                .nth(1)
                .unwrap()["digest"]
                .as_str()
                .unwrap(),
        );

        for pm in case["per_memory"].as_array().unwrap() {
            let mem = num(&pm["memory_size"]);
            let order = match pm["page_add_order"].as_str().unwrap() {
                "two-pass" => PageAddOrder::TwoPass,
                "single-pass" => PageAddOrder::SinglePass,
                other => panic!("{other}"),
            };
            let qemu_major: u32 = pm["qemu_version"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(PageAddOrder::for_qemu_major(qemu_major), order);
            let label = format!(
                "{name} mem={} {}",
                pm["memory_hex"].as_str().unwrap(),
                pm["page_add_order"].as_str().unwrap()
            );
            let m = tdx::measure(&TdxInputs {
                ovmf: &ovmf,
                kernel: Some(&kernel),
                initrd: Some(&initrd),
                append: inputs["metadata_cmdline"].as_str(),
                memory_size: mem,
                order,
            });
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    report.fail(&label, e);
                    continue;
                }
            };
            report.check(
                &format!("{label} mrtd"),
                m.mrtd,
                pm["mrtd"].as_str().unwrap(),
            );
            report.check(
                &format!("{label} td_hob_sha384"),
                m.td_hob_sha384,
                pm["td_hob_sha384"].as_str().unwrap(),
            );
            report.check(
                &format!("{label} kernel_authenticode_patched"),
                m.kernel_authenticode.unwrap(),
                pm["kernel_authenticode_patched"].as_str().unwrap(),
            );
            report.check(
                &format!("{label} rtmr1"),
                m.rtmr1.unwrap(),
                pm["rtmr1"].as_str().unwrap(),
            );
            report.check(
                &format!("{label} rtmr2"),
                m.rtmr2.unwrap(),
                pm["rtmr2"].as_str().unwrap(),
            );
            report.check(
                &format!("{label} rtmr0_dstack_formula"),
                tdx::rtmr0(&m.td_hob_sha384, &cfv_fixed, &acpi, &boot0000),
                pm["rtmr0_dstack_formula_NOT_real_for_this_ovmf"]
                    .as_str()
                    .unwrap(),
            );
            if mem >= 0x4000_0000 {
                report.check(
                    &format!("{label} patched_high_mem"),
                    m.kernel_authenticode.unwrap(),
                    st["kernel_authenticode_patched_high_mem"].as_str().unwrap(),
                );
            }
            report.check(
                &format!("{label} rtmr2 static"),
                m.rtmr2.unwrap(),
                st["rtmr2"].as_str().unwrap(),
            );
        }
        for (mem, bytes) in case["td_hob_bytes_hex_by_memory"].as_object().unwrap() {
            let hob = tdx::td_hob(&sections, mem.parse().unwrap()).unwrap();
            report.check(
                &format!("{name} td_hob bytes mem={mem}"),
                hob,
                bytes.as_str().unwrap(),
            );
        }
    }
    report.finish("tdx_reference_tool_cases");
}

/// The real dstack quote: RTMR0..3 by replaying the event log (RTMR3 events rebuilt
/// from their name and payload), the first-principles digests, and the TD HOB for 2 GiB
/// (the Debian firmware has the same TD_HOB/TEMP_MEM layout, as the witness shows).
#[test]
fn tdx_hardware_quote_case() {
    let doc = load("tdx-measurement-cases.json");
    let mut report = Report::default();
    for case in doc["hardware_quote_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let expected = &case["expected"];
        let quote = hex::decode(case["quote_hex"].as_str().unwrap()).unwrap();
        report.check(
            &format!("{name} quote mrtd"),
            &quote[184..232],
            expected["mrtd"].as_str().unwrap(),
        );
        let mut regs: Vec<Vec<[u8; 48]>> = vec![Vec::new(); 4];
        for e in case["event_log"].as_array().unwrap() {
            let imr = e["imr"].as_u64().unwrap() as usize;
            let digest = match e["digest"].as_str() {
                Some(d) => arr48(d),
                None => {
                    let ty = hex_u64(e["event_type"].as_str().unwrap()) as u32;
                    let payload = hex::decode(e["event_payload_hex"].as_str().unwrap()).unwrap();
                    let d = tdx::dstack_runtime_event_digest(
                        ty,
                        e["event"].as_str().unwrap(),
                        &payload,
                    );
                    report.check(
                        &format!("{name} rtmr3 event {}", e["event"]),
                        d,
                        e["digest_computed"].as_str().unwrap(),
                    );
                    d
                }
            };
            regs[imr].push(digest);
        }
        for (i, events) in regs.iter().enumerate() {
            let got = tdx::replay(events.iter());
            report.check(
                &format!("{name} rtmr{i} replay"),
                got,
                expected[format!("rtmr{i}")].as_str().unwrap(),
            );
            report.check(
                &format!("{name} rtmr{i} in quote"),
                &quote[376 + 48 * i..424 + 48 * i],
                expected[format!("rtmr{i}")].as_str().unwrap(),
            );
        }
        let fp = &case["first_principles_digests"];
        let g = tdx::EFI_GLOBAL_VARIABLE;
        let db = tdx::EFI_IMAGE_SECURITY_DATABASE;
        let computed = [
            ("SecureBoot", tdx::efi_variable_digest(&g, "SecureBoot")),
            ("PK", tdx::efi_variable_digest(&g, "PK")),
            ("KEK", tdx::efi_variable_digest(&g, "KEK")),
            ("db", tdx::efi_variable_digest(&db, "db")),
            ("dbx", tdx::efi_variable_digest(&db, "dbx")),
            ("separator", tdx::separator_digest()),
            (
                "BootOrder(raw 0x0000)",
                ring_sha384(&[0, 0]).try_into().unwrap(),
            ),
            (
                tdx::CALLING_EFI_APPLICATION,
                tdx::efi_action_digest(tdx::CALLING_EFI_APPLICATION),
            ),
            (
                tdx::EXIT_BOOT_SERVICES_INVOCATION,
                tdx::efi_action_digest(tdx::EXIT_BOOT_SERVICES_INVOCATION),
            ),
            (
                tdx::EXIT_BOOT_SERVICES_SUCCESS,
                tdx::efi_action_digest(tdx::EXIT_BOOT_SERVICES_SUCCESS),
            ),
        ];
        for (k, d) in computed {
            report.check(
                &format!("{name} first principles {k}"),
                d,
                fp[k].as_str().unwrap(),
            );
        }
        let cbor = &case["measurement_tdx_cbor_decoded"];
        report.check(
            &format!("{name} mrtd == cbor two_pass"),
            arr48(expected["mrtd"].as_str().unwrap()),
            cbor["tdvf"]["mrtd"]["two_pass"].as_str().unwrap(),
        );
        // RTMR1/RTMR2 from the image digests the CBOR records.
        let r1 = tdx::rtmr1(&arr48(
            cbor["image"]["kernel_authenticode"].as_str().unwrap(),
        ));
        report.check(
            &format!("{name} rtmr1 from kernel_authenticode"),
            r1,
            expected["rtmr1"].as_str().unwrap(),
        );
        let r2 = tdx::rtmr2(
            &arr48(cbor["image"]["cmdline_sha384"].as_str().unwrap()),
            Some(&arr48(cbor["image"]["initrd_sha384"].as_str().unwrap())),
        );
        report.check(
            &format!("{name} rtmr2 from image digests"),
            r2,
            expected["rtmr2"].as_str().unwrap(),
        );
        // The TD HOB for 2 GiB, from a firmware with the same TD HOB witness.
        let ovmf = file("tdx/inputs/debian-ovmf_2022.11-6-deb12u2-OVMF.fd");
        let sections = Firmware::parse(&ovmf).unwrap().tdvf_sections().unwrap();
        report.check(
            &format!("{name} td_hob witness"),
            tdx::td_hob_witness(&sections).unwrap(),
            cbor["tdvf"]["td_hob"].as_str().unwrap(),
        );
        let mem = num(&case["vm_config"]["memory_size"]);
        let hob = tdx::td_hob(&sections, mem).unwrap();
        report.check(
            &format!("{name} td_hob bytes"),
            &hob,
            case["td_hob_bytes_2GiB_hex"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} td_hob sha384"),
            ring_sha384(&hob),
            case["td_hob_2GiB_sha384"].as_str().unwrap(),
        );
        report.check(
            &format!("{name} td_hob event"),
            ring_sha384(&hob),
            case["event_log"][0]["digest"].as_str().unwrap(),
        );
    }
    report.finish("tdx_hardware_quote_case");
}

#[test]
fn tdx_unit_vectors() {
    let doc = load("tdx-measurement-cases.json");
    let mut report = Report::default();
    for v in doc["unit_vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let sections: Vec<_> = v["input_sections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| veil_images::measure::ovmf::TdvfSection {
                data_offset: 0,
                raw_size: 0,
                gpa: hex_u64(s["gpa"].as_str().unwrap()),
                mem_size: hex_u64(s["size"].as_str().unwrap()),
                section_type: match s["type"].as_str().unwrap() {
                    "TD_HOB" => TdvfSectionType::TdHob,
                    "TEMP_MEM" => TdvfSectionType::TempMem,
                    other => panic!("{other}"),
                },
                attributes: 0,
            })
            .collect();
        report.check(
            name,
            tdx::td_hob_witness(&sections).unwrap(),
            v["expected"].as_str().unwrap(),
        );
    }
    report.finish("tdx_unit_vectors");
}

/// Malformed inputs are errors, never panics.
#[test]
fn malformed_inputs_are_errors() {
    // A TDVF section whose GPA range overflows or passes 52 bits is refused, not wrapped.
    for (gpa, mem_size) in [(u64::MAX - 0xFFF, 0x2000), (1 << 52, 0x1000)] {
        let section = veil_images::measure::ovmf::TdvfSection {
            data_offset: 0,
            raw_size: 0,
            gpa,
            mem_size,
            section_type: TdvfSectionType::TempMem,
            attributes: 0,
        };
        assert!(
            tdx::mrtd_from_sections(&[], &[section], PageAddOrder::SinglePass).is_err(),
            "gpa {gpa:#x}"
        );
    }
    let ovmf = file("sev-snp-measure/fixtures/ovmf_AmdSev_suffix.bin");
    for len in [0, 1, 17, 49, 50, 100] {
        assert!(
            Firmware::parse(&ovmf[ovmf.len() - len..]).is_err(),
            "suffix of {len} bytes"
        );
    }
    // Not a whole number of pages: the footer parses, the page measurement refuses it.
    assert!(Firmware::parse(&ovmf[1..]).is_ok());
    assert!(matches!(
        snp::ovmf_hash(&ovmf[1..]),
        Err(MeasureError::Image { .. })
    ));
    // Flip every byte of the footer region: parsing must not panic.
    for i in (ovmf.len() - 512)..ovmf.len() {
        let mut bad = ovmf.clone();
        bad[i] ^= 0xFF;
        if let Ok(fw) = Firmware::parse(&bad) {
            let _ = fw.sev_metadata();
            let _ = fw.tdvf_sections();
            let _ = snp::launch_digest(&SnpInputs {
                ovmf: &bad,
                vcpus: 2,
                vcpu_sig: Some(1),
                kernel: Some(&[]),
                ..Default::default()
            });
        }
    }
    assert!(matches!(
        snp::launch_digest(&SnpInputs {
            ovmf: &ovmf,
            vcpus: 1,
            ..Default::default()
        }),
        Err(MeasureError::MissingVcpuSignature)
    ));
    assert!(matches!(
        snp::launch_digest(&SnpInputs {
            ovmf: &ovmf,
            vcpus: 0,
            vcpu_sig: Some(1),
            ..Default::default()
        }),
        Err(MeasureError::NoVcpus)
    ));
    assert!(matches!(
        vmsa::vcpu_type_signature("Skylake"),
        Err(MeasureError::UnknownVcpuType(_))
    ));
    assert!(tdx::authenticode_sha384(&[0u8; 64]).is_err());
    assert!(tdx::patch_kernel(&[0u8; 0x300], None, 1 << 30).is_err());
    // A split OVMF_CODE image's TDVF offsets point past the end of the file.
    let split = file("sev-snp-measure/fixtures/svsm_ovmf.fd");
    let fw = Firmware::parse(&split).unwrap();
    assert!(tdx::mrtd(&fw, PageAddOrder::TwoPass).is_err());
}
