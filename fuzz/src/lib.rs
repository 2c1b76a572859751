//! The checks behind veil's fuzz targets, one function per target.
//!
//! Each feeds untrusted bytes to `veil-attestation`'s parsers and asserts a cheap
//! invariant; it panics only when an invariant breaks (or when the library itself
//! panics, which is the bug being looked for). Each returns whether the input was
//! accepted, which the fuzz targets ignore and the seed-replay test uses to check that
//! the committed seeds are meaningful.
//!
//! `attestation/tests/fuzz_seeds.rs` includes this file by path, so `cargo test` replays
//! the seeds under `fuzz/seeds/<target>/` through exactly these calls. Keep it free of
//! dependencies other than `veil_attestation` and `std`.

use std::sync::OnceLock;

use veil_attestation::bundle::Bundle;
use veil_attestation::channel::{
    AeadKind, KemKind, KeyConfig, KeyConfigList, KeyId, Limits, Response, ServerKeys,
};
use veil_attestation::receipt::{Receipt, SignedReceipt};

/// The gateway's X25519 private key of RFC 9458 Appendix A (key id 1), so the RFC's
/// encapsulated request is a seed that opens.
pub const RFC9458_GATEWAY_SK: [u8; 32] = [
    0x3c, 0x16, 0x89, 0x75, 0x67, 0x4b, 0x2f, 0xa8, 0xe4, 0x65, 0x97, 0x0b, 0x79, 0xc8, 0xdc, 0xf0,
    0x9f, 0x1c, 0x74, 0x16, 0x26, 0x48, 0x0b, 0xd4, 0xc6, 0x16, 0x2f, 0xc5, 0xb6, 0xa9, 0x8e, 0x1a,
];

/// The RFC 9458 Appendix A gateway's keys (built once per process) and the routing id of
/// their only configuration.
pub fn rfc9458_keys() -> &'static (ServerKeys, KeyId) {
    static KEYS: OnceLock<(ServerKeys, KeyId)> = OnceLock::new();
    KEYS.get_or_init(|| {
        with_only_id(
            ServerKeys::dangerous_import(1, KemKind::X25519, &AeadKind::ALL, &RFC9458_GATEWAY_SK)
                .expect("the RFC 9458 Appendix A key imports"),
        )
    })
}

/// A fixed X-Wing private key (its 32-byte seed; key id 2), so that a request sealed to
/// it is a seed that opens and the fuzzer reaches X-Wing decapsulation.
pub const XWING_SEED: [u8; 32] = [0x58; 32];

/// The X-Wing keys of [`XWING_SEED`] (built once per process) and the routing id of their
/// only configuration.
pub fn xwing_keys() -> &'static (ServerKeys, KeyId) {
    static KEYS: OnceLock<(ServerKeys, KeyId)> = OnceLock::new();
    KEYS.get_or_init(|| {
        with_only_id(
            ServerKeys::dangerous_import(2, KemKind::XWing, &AeadKind::ALL, &XWING_SEED)
                .expect("the X-Wing seed imports"),
        )
    })
}

/// `keys` and the routing id of their only configuration.
fn with_only_id(keys: ServerKeys) -> (ServerKeys, KeyId) {
    let id = match keys.configs().configs() {
        [only] => only.id(),
        other => panic!("expected one key configuration, found {}", other.len()),
    };
    (keys, id)
}

/// Target `ohttp_request`: open a whole request, to the RFC 9458 Appendix A X25519 key
/// and to an X-Wing key (must return, never panic; what opens can be answered), and
/// parse the bytes as a key configuration and as a list of them.
pub fn ohttp_request(data: &[u8]) -> bool {
    // `|`, not `||`: every parser sees every input.
    open_whole(rfc9458_keys(), data) | open_whole(xwing_keys(), data) | key_configs(data)
}

fn open_whole((keys, id): &(ServerKeys, KeyId), data: &[u8]) -> bool {
    match keys.open_request(id, data, &Limits::default()) {
        Ok((_request, sealer)) => {
            let reply = sealer.seal(&Response::new(200, b"{}".to_vec()));
            assert!(reply.is_ok(), "an opened request could not be answered");
            true
        }
        Err(_) => false,
    }
}

/// Key configurations and lists: what parses re-encodes to exactly the input.
fn key_configs(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(list) = KeyConfigList::parse(data) {
        assert_eq!(list.as_bytes(), data, "key configuration list re-encoding");
        for c in list.configs() {
            let again = KeyConfig::parse(c.as_bytes()).expect("a listed configuration parses");
            assert_eq!(&again, c, "listed configuration re-parse");
        }
        accepted = true;
    }
    if let Ok(config) = KeyConfig::parse(data) {
        assert_eq!(config.as_bytes(), data, "key configuration re-encoding");
        assert_eq!(config.id(), KeyId::of(data), "key id of the configuration");
        assert!(
            !config.aeads().is_empty(),
            "a parsed configuration offers no AEAD"
        );
        accepted = true;
    }
    accepted
}

/// Target `ohttp_chunked_request`: open a chunked request held in memory (must return,
/// never panic; what opens can be answered).
pub fn ohttp_chunked_request(data: &[u8]) -> bool {
    let (keys, id) = rfc9458_keys();
    match keys.open_chunked_request(id, data, &Limits::default()) {
        Ok((_request, sealer)) => {
            let reply = sealer.seal_whole(&Response::new(200, b"{}".to_vec()));
            assert!(
                reply.is_ok(),
                "an opened chunked request could not be answered"
            );
            true
        }
        Err(_) => false,
    }
}

/// Target `bundle_json`: a bundle that parses serializes and parses back equal.
pub fn bundle_json(data: &[u8]) -> bool {
    let Ok(bundle) = Bundle::parse(data) else {
        return false;
    };
    let json = bundle.to_json().expect("a parsed bundle serializes");
    let again = Bundle::parse(json.as_bytes()).expect("a serialized bundle parses");
    assert_eq!(again, bundle, "bundle JSON round trip");
    true
}

/// Target `receipt`: canonical bytes, the compact form and the JSON form. Canonical
/// bytes and the compact form that parse re-encode to exactly the input; a signed
/// receipt from JSON survives the compact form.
pub fn receipt(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(r) = Receipt::parse(data) {
        let bytes = r.to_bytes().expect("a parsed receipt encodes");
        assert_eq!(bytes, data, "receipt canonical bytes re-encoding");
        accepted = true;
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(s) = SignedReceipt::parse_compact(text)
    {
        let compact = s.to_compact().expect("a parsed compact receipt encodes");
        assert_eq!(compact, text, "compact receipt re-encoding");
        accepted = true;
    }
    if let Ok(s) = SignedReceipt::parse_json(data) {
        let compact = s.to_compact().expect("a receipt parsed from JSON encodes");
        let again = SignedReceipt::parse_compact(&compact).expect("its compact form parses");
        assert_eq!(again, s, "JSON receipt through the compact form");
        accepted = true;
    }
    accepted
}

/// Target `snp_report`: an SEV-SNP attestation report (binary or hex) parses or is
/// refused, never panics; what parses keeps its bytes, and its signature conversion and
/// TCB decoding return.
pub fn snp_report(data: &[u8]) -> bool {
    use veil_attestation::snp::{AttestationReport, Product};
    let Ok(report) = AttestationReport::from_bytes_or_hex(data) else {
        return false;
    };
    if data.len() == veil_attestation::snp::report::REPORT_LEN {
        assert_eq!(&report.as_bytes()[..], data, "report bytes kept");
    }
    assert_eq!(
        report.signed_bytes().len(),
        veil_attestation::snp::report::SIGNED_LEN
    );
    let _ = report.signature_p384_fixed();
    for product in Product::ALL {
        let _ = report.reported_tcb.decode(product);
    }
    let _ = report.cpuid_product();
    true
}

/// Target `snp_chain`: certificates (DER or PEM, or an extended-report certificate
/// table) built into an SEV-SNP chain to the pinned roots: never panics; a chain that
/// builds has a VCEK/VLEK whose issuer verified.
pub fn snp_chain(data: &[u8]) -> bool {
    use veil_attestation::checks::Checks;
    use veil_attestation::snp::SnpChain;
    use veil_attestation::tsm::snp_certificate_table;
    use veil_attestation::x509::Certificate;
    let mut accepted = false;
    if let Ok(table) = snp_certificate_table(data) {
        for (_, der) in &table {
            let _ = Certificate::from_der(der);
        }
        accepted = !table.is_empty();
    }
    if let Ok(certs) = Certificate::all_from_pem_or_der(data) {
        let mut checks = Checks::new();
        if let Ok(chain) = SnpChain::from_certificates(certs, None, &[], &mut checks) {
            assert!(checks.all_passed(), "a built chain has no failed check");
            assert!(
                chain.vek.verify_issued_by(&chain.ask).is_ok(),
                "the VEK's issuer verifies"
            );
            accepted = true;
        }
    }
    accepted
}

/// Target `tdx_quote`: parse a TDX quote (must return, never panic); what parses has a
/// signed part of the size its version and body type give, holds REPORTDATA where the
/// body puts it, and parses the same without whatever followed the signature data.
pub fn tdx_quote(data: &[u8]) -> bool {
    use veil_attestation::tdx::Quote;
    let Ok(quote) = Quote::parse(data) else {
        return false;
    };
    let body = if quote.report.body_type == 3 {
        648
    } else {
        584
    };
    let descriptor = if quote.header.version == 5 { 6 } else { 0 };
    assert_eq!(quote.signed.len(), 48 + descriptor + body, "signed length");
    let rd_at = 48 + descriptor + 520;
    assert_eq!(
        quote.signed.get(rd_at..rd_at + 64),
        Some(&quote.report.report_data[..]),
        "REPORTDATA offset"
    );
    assert_eq!(
        quote.report.mr_service_td.is_some(),
        quote.report.body_type == 3,
        "TD 1.5 fields"
    );
    let exact = &data[..data.len() - quote.trailing_zeros];
    let again = Quote::parse(exact).expect("the quote without its trailing bytes parses");
    assert_eq!(again.signed, quote.signed, "re-parse");
    assert_eq!(again.pck_chain_pem, quote.pck_chain_pem, "re-parse");
    true
}

/// Target `tdx_ccel`: parse a binary CCEL event log (must return, never panic); what
/// parses has records at increasing offsets inside the input, events that replay (RTMR
/// 0..=3), and parses the same cut at its end (`log_end`) and with more `0xFF` padding
/// after it.
pub fn tdx_ccel(data: &[u8]) -> bool {
    use veil_attestation::tdx::eventlog;
    let Ok(records) = eventlog::parse_ccel_records(data) else {
        return false;
    };
    let mut last = None;
    for r in &records {
        assert!(r.offset < data.len(), "record offset inside the log");
        assert!(last < Some(r.offset), "record offsets increase");
        last = Some(r.offset);
        assert!(r.mr_index <= 4, "MR index range");
        if let Some(rtmr) = r.rtmr() {
            assert!(rtmr <= 3, "RTMR range");
        }
    }
    let events = eventlog::parse_ccel(data).expect("parsed records give events");
    let expected: Vec<_> = records.iter().filter_map(|r| r.event()).collect();
    assert_eq!(events, expected, "events are the records' events");
    eventlog::replay(&events).expect("parsed events replay");
    // Cut at its end (as an enclave carries it), the log parses the same.
    let end = eventlog::log_end(data).expect("a parsed log has an end");
    assert!(end <= data.len(), "the end is inside the log");
    let cut = eventlog::parse_ccel_records(data.get(..end).unwrap_or_default());
    assert_eq!(
        cut.ok().as_ref(),
        Some(&records),
        "the log without its padding"
    );
    // More 0xFF padding changes nothing, unless the log ends in zero padding (zeros
    // then 0xFF is neither kind of padding).
    if data.last() != Some(&0) && data.len() < eventlog::MAX_CCEL - 64 {
        let mut padded = data.to_vec();
        padded.extend([0xFF; 64]);
        let again = eventlog::parse_ccel_records(&padded);
        assert_eq!(again.ok().as_ref(), Some(&records), "0xFF padding appended");
    }
    true
}

/// Target `nvidia_report`: an NVIDIA SPDM `GET_MEASUREMENTS` transcript (binary or hex)
/// parses or is refused, never panics; what parses splits exactly into signed part,
/// 96-byte signature and tolerated trailing zeros, re-parses the same without them,
/// and its opaque fields read. The same bytes as a RIM (SWID XML), as a signed RIM
/// (XML-DSig) and as an OCSP response parse or are refused.
pub fn nvidia_report(data: &[u8]) -> bool {
    use veil_attestation::nvidia::{GpuReport, OcspResponse, Rim};
    let rim = Rim::parse(data).map(|r| r.active_indices()).is_ok();
    // As a signed RIM: the XML-DSig verifier (canonicalization included) verifies it or
    // refuses it; it never panics.
    if let (Ok(text), Ok(root)) = (
        std::str::from_utf8(data),
        veil_attestation::nvidia::rim_root(),
    ) {
        let at = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let _ = veil_attestation::nvidia::xmldsig::verify_enveloped(text, root, at);
    }
    let ocsp = OcspResponse::from_der(data).is_ok();
    let Ok(report) = GpuReport::from_bytes_or_hex(data) else {
        return rim || ocsp;
    };
    let all = report.as_bytes();
    let signed = report.signed_bytes();
    assert_eq!(
        signed.len() + 96 + report.trailing_zeros,
        all.len(),
        "signed part, signature and trailing zeros make the transcript"
    );
    assert_eq!(
        &all[signed.len()..signed.len() + 96],
        &report.signature[..],
        "signature position"
    );
    assert_eq!(&signed[4..36], &report.request.nonce[..], "nonce position");
    let exact = &all[..all.len() - report.trailing_zeros];
    let again = GpuReport::from_bytes(exact).expect("the transcript without trailing zeros parses");
    assert_eq!(again.blocks, report.blocks, "re-parse");
    assert_eq!(again.opaque, report.opaque, "re-parse");
    let _ = (
        report.opaque.driver_version(),
        report.opaque.vbios_version(),
        report.opaque.project(),
        report.opaque.project_sku(),
        report.opaque.chip_sku(),
        report.opaque.board_id(),
        report.opaque.fwid(),
    );
    true
}

/// Target `snp_ext_report`: what `/dev/sev-guest` returns for an extended report (the
/// firmware's response and the host's certificate buffer, both untrusted), split at the
/// offset the first two bytes give. Must return, never panic; what parses holds a report
/// of exactly 1184 bytes and at most the table bound of certificates, each non-empty.
pub fn snp_ext_report(data: &[u8]) -> bool {
    use veil_attestation::snp::guest;
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return false;
    };
    let cut = usize::from(u16::from_le_bytes(*head)).min(rest.len());
    let (response, certs) = rest.split_at(cut);
    let Ok(ext) = guest::parse_extended_report(response, certs) else {
        return false;
    };
    assert_eq!(ext.report.len(), guest::REPORT_LEN, "report size");
    assert!(
        ext.certificates.len() <= veil_attestation::tsm::SNP_CERT_TABLE_MAX,
        "certificate count bound"
    );
    assert!(
        ext.certificates
            .iter()
            .all(|(_, der)| !der.is_empty() && der.len() <= certs.len()),
        "certificates lie inside the buffer"
    );
    true
}

/// Target `tdx_qgs_response`: a Quote Generation Service reply (untrusted, from the
/// host). Must return, never panic; a quote it yields lies inside the message.
pub fn tdx_qgs_response(data: &[u8]) -> bool {
    use veil_attestation::tdx::qgs;
    let Ok(quote) = qgs::decode_get_quote_response(data) else {
        return false;
    };
    assert!(!quote.is_empty(), "an accepted reply carries a quote");
    assert!(
        quote.len() + qgs::FIXED_LEN <= data.len(),
        "quote inside the message"
    );
    true
}
