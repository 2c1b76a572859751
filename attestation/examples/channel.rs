//! The foundation, end to end in one process, until `veil demo` exists: an enclave's
//! keys and simulated evidence, a client that verifies the bundle and seals a chat
//! request, and a streamed, padded, sealed answer with a signed receipt.
//!
//! `cargo run --release -p veil-attestation --example channel`

use futures::executor::block_on;
use time::OffsetDateTime;
use veil_attestation::bundle::{self, Bundle, Claims, Evidence};
use veil_attestation::bytes::{Base64Bytes, Sha256Digest};
use veil_attestation::channel::{Headers, Limits, Request, ServerKeys, Target};
use veil_attestation::claims::{ClaimsCore, ModelManifest, Platform};
use veil_attestation::receipt::{Receipt, ReceiptSigner, SignedReceipt};
use veil_attestation::sim::SimPlatform;
use veil_attestation::verify::{Policy, verify_bundle};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // --- enclave: keys in memory, claims bound into (simulated) evidence ---
    let keys = ServerKeys::generate()?;
    let receipts = ReceiptSigner::generate()?;
    let sim = SimPlatform::new()?;
    let mut manifest = ModelManifest::default();
    manifest
        .files
        .insert("chat/demo.gguf".into(), Sha256Digest::of(b"demo weights"));
    let digest = manifest.digest();
    let core = ClaimsCore {
        key_configs: keys.configs(),
        receipt_public_key: &receipts.public_key(),
        model_manifest_digest: &digest,
        platform: Platform::Sim,
        enclave_version: env!("CARGO_PKG_VERSION"),
    };
    let produced_at = OffsetDateTime::now_utc();
    let report_data = core.report_data(&bundle::gpu_evidence_digest(&[]), produced_at);
    let bundle = Bundle {
        version: bundle::VERSION,
        claims: Claims {
            key_configs: Base64Bytes(keys.configs().as_bytes().to_vec()),
            key_ids: keys.configs().configs().iter().map(|c| c.id()).collect(),
            receipt_public_key: receipts.public_key(),
            model_manifest: manifest,
            platform: Platform::Sim,
            enclave_version: env!("CARGO_PKG_VERSION").into(),
        },
        cpu: Evidence::Sim(sim.evidence(&report_data)),
        gpus: vec![],
        produced_at,
    };
    let json = bundle.to_json()?;
    println!(
        "enclave: bundle of {} bytes, key ids {:?}",
        json.len(),
        bundle.claims.key_ids
    );

    // --- client: verify, then seal ---
    let parsed = Bundle::parse(json.as_bytes())?;
    match verify_bundle(&parsed, &Policy::default(), OffsetDateTime::now_utc()) {
        Err(e) => println!("client: default policy refuses it: {e}"),
        Ok(_) => return Err("the default policy accepted a simulated TEE".into()),
    }
    let identity = verify_bundle(
        &parsed,
        &Policy::insecure_allow_sim(),
        OffsetDateTime::now_utc(),
    )?;
    eprintln!("WARNING: accepting the SIMULATED TEE (insecure_allow_sim): no hardware protection");
    let target = Target::preferred(&identity)?;
    println!(
        "client: sealing to key {} ({:?})",
        target.key_id(),
        target.aead()
    );
    let mut request = Request::new(
        "POST",
        "/v1/chat/completions",
        br#"{"model":"demo","stream":true,"messages":[{"role":"user","content":"Hello"}]}"#
            .to_vec(),
    );
    request.headers.push("content-type", "application/json")?;
    let (sealed, pending) = target.seal_chunked_request(&request)?;
    println!(
        "wire:   request of {} sealed bytes (plaintext {} bytes)",
        sealed.len(),
        request.body.len()
    );

    // --- enclave: open, stream the answer, sign a receipt ---
    let (opened, mut sealer) =
        keys.open_chunked_request(&target.key_id(), &sealed, &Limits::default())?;
    println!("enclave: opened {} {}", opened.method, opened.path);
    let mut wire = sealer.seal_head(
        200,
        &Headers::new().with("content-type", "text/event-stream")?,
    )?;
    for token in ["Hello", "!", " How", " can", " I", " help", "?"] {
        let event = format!("data: {{\"choices\":[{{\"delta\":{{\"content\":{token:?}}}}}]}}\n\n");
        let chunk = sealer.seal_event(event.as_bytes())?;
        println!("wire:   token chunk of {} bytes", chunk.len());
        wire.extend(chunk);
    }
    let receipt = receipts.sign(Receipt {
        request_digest: Sha256Digest::of(&sealed),
        key_id: target.key_id(),
        model: "demo".into(),
        prompt_tokens: 5,
        completion_tokens: 7,
        status: 200,
        started_at_ms: 0,
        finished_at_ms: 1,
    })?;
    wire.extend(sealer.finish(&Headers::new().with("veil-receipt", &receipt.to_compact()?)?)?);

    // --- client: open as it arrives, check the receipt ---
    let mut stream = pending.stream(futures::io::Cursor::new(wire))?;
    block_on(async {
        let (status, _) = stream.head().await?;
        let mut text = String::new();
        while let Some(piece) = stream.next_content().await? {
            for line in String::from_utf8_lossy(&piece).lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let v: serde_json::Value = serde_json::from_str(data)?;
                    text.push_str(v["choices"][0]["delta"]["content"].as_str().unwrap_or(""));
                }
            }
        }
        let trailer = stream.trailers()?;
        let compact = trailer.get("veil-receipt").ok_or("no receipt")?;
        let r = SignedReceipt::parse_compact(compact)?;
        let r = r.verify(identity.receipt_public_key())?;
        println!(
            "client: {status} \"{text}\"; receipt verified: {} completion tokens",
            r.completion_tokens
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
