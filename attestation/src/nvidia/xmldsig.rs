//! The enveloped XML signature of an NVIDIA RIM (W3C XML-DSig 1.1), verified offline.
//!
//! Exactly the profile NVIDIA's RIMs use, and nothing else:
//! - one `ds:Signature` child of the document element, with one `ds:Reference URI=""`
//!   whose transforms are enveloped-signature then Canonical XML 1.1 (without comments);
//! - `CanonicalizationMethod` Canonical XML 1.1 (1.0 is accepted too: for documents
//!   without `xml:` attributes above the signed subset the two give the same bytes, and
//!   such attributes are refused);
//! - `DigestMethod` SHA-384, `SignatureMethod` ECDSA-SHA384 (raw r‖s, 96 bytes);
//! - the signer is the first `ds:X509Certificate` of `KeyInfo`, the others its issuers,
//!   and the chain must end at the pinned `NVIDIA CoRIM signing Root CA`.
//!
//! Canonicalization is implemented here for the node sets these signatures need (the
//! whole document minus the signature, and the `SignedInfo` subtree): namespace
//! declarations rendered where they first appear (all in-scope ones on the apex of a
//! subtree), sorted by prefix; attributes sorted by namespace URI then local name; the
//! C14N escaping of text and attribute values; empty elements as start-end pairs;
//! comments dropped. Anything outside that profile is an error, never a guess.

use base64::Engine as _;
use roxmltree::{Document, Node, NodeId, NodeType};
use time::OffsetDateTime;

use crate::x509::Certificate;

/// XML-DSig namespace.
const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
/// The `xml:` namespace, never declared in canonical output.
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
const C14N_11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const C14N_10: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const SHA384: &[&str] = &[
    "http://www.w3.org/2001/04/xmldsig-more#sha384",
    "http://www.w3.org/2001/04/xmlenc#sha384",
];
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";

/// Why a RIM's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XmlDsigError {
    /// Not well-formed XML.
    #[error("XML: {0}")]
    Xml(String),
    /// An element or attribute the profile requires is missing or repeated.
    #[error("XML signature: {0}")]
    Structure(&'static str),
    /// An algorithm or transform outside the profile.
    #[error("XML signature: unsupported {what} {found:?}")]
    Unsupported {
        /// Which.
        what: &'static str,
        /// What the document says.
        found: String,
    },
    /// Base64 that does not decode, or a value of the wrong length.
    #[error("XML signature: {0} is not valid base64 of the right length")]
    Encoding(&'static str),
    /// The canonical document does not hash to the signed digest.
    #[error(
        "XML signature: the document's SHA-384 digest differs from the signed DigestValue (the RIM was altered)"
    )]
    Digest,
    /// The signature over `SignedInfo` does not verify with the signer's key.
    #[error("XML signature: ECDSA-SHA384 over SignedInfo does not verify with {0}")]
    Signature(String),
    /// The signer's certificate chain.
    #[error("RIM signing chain: {0}")]
    Chain(String),
}

/// Who signed a RIM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RimSigner {
    /// The subjects of the chain, signer first, the pinned root last.
    pub chain: Vec<String>,
}

fn single<'a, 'i>(
    parent: Node<'a, 'i>,
    name: &'static str,
    what: &'static str,
) -> Result<Node<'a, 'i>, XmlDsigError> {
    let mut found = parent
        .children()
        .filter(|n| n.is_element() && n.has_tag_name((DS, name)));
    match (found.next(), found.next()) {
        (Some(n), None) => Ok(n),
        _ => Err(XmlDsigError::Structure(what)),
    }
}

fn algorithm<'a>(node: Node<'a, '_>) -> Result<&'a str, XmlDsigError> {
    node.attribute("Algorithm")
        .ok_or(XmlDsigError::Structure("an Algorithm attribute is missing"))
}

fn base64_text(node: Node<'_, '_>, what: &'static str) -> Result<Vec<u8>, XmlDsigError> {
    let text: String = node
        .text()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| XmlDsigError::Encoding(what))
}

/// Verify the enveloped signature of the RIM `xml` at time `at`, with its KeyInfo chain
/// ending at `root`.
///
/// # Errors
/// [`XmlDsigError`] naming the first thing that failed.
pub fn verify_enveloped(
    xml: &str,
    root: &Certificate,
    at: OffsetDateTime,
) -> Result<RimSigner, XmlDsigError> {
    let doc = Document::parse(xml).map_err(|e| XmlDsigError::Xml(e.to_string()))?;
    let top = doc.root_element();
    let signature = single(top, "Signature", "one ds:Signature in the document element")?;
    let signed_info = single(signature, "SignedInfo", "one ds:SignedInfo")?;
    let c14n = algorithm(single(
        signed_info,
        "CanonicalizationMethod",
        "one ds:CanonicalizationMethod",
    )?)?;
    if c14n != C14N_11 && c14n != C14N_10 {
        return Err(XmlDsigError::Unsupported {
            what: "canonicalization",
            found: c14n.to_owned(),
        });
    }
    let method = algorithm(single(
        signed_info,
        "SignatureMethod",
        "one ds:SignatureMethod",
    )?)?;
    if method != ECDSA_SHA384 {
        return Err(XmlDsigError::Unsupported {
            what: "signature method",
            found: method.to_owned(),
        });
    }
    let reference = single(signed_info, "Reference", "one ds:Reference")?;
    if reference.attribute("URI") != Some("") {
        return Err(XmlDsigError::Structure(
            "the Reference must cover the whole document (URI=\"\")",
        ));
    }
    let transforms: Vec<&str> = single(reference, "Transforms", "one ds:Transforms")?
        .children()
        .filter(|n| n.is_element())
        .map(|t| {
            if t.has_tag_name((DS, "Transform")) {
                algorithm(t)
            } else {
                Err(XmlDsigError::Structure(
                    "Transforms holds only ds:Transform",
                ))
            }
        })
        .collect::<Result<_, _>>()?;
    match transforms.as_slice() {
        [ENVELOPED] => {}
        [ENVELOPED, c] if *c == C14N_11 || *c == C14N_10 => {}
        other => {
            return Err(XmlDsigError::Unsupported {
                what: "transforms",
                found: other.join(" "),
            });
        }
    }
    let digest_method = algorithm(single(reference, "DigestMethod", "one ds:DigestMethod")?)?;
    if !SHA384.contains(&digest_method) {
        return Err(XmlDsigError::Unsupported {
            what: "digest method",
            found: digest_method.to_owned(),
        });
    }
    let digest_value = base64_text(
        single(reference, "DigestValue", "one ds:DigestValue")?,
        "DigestValue",
    )?;
    let signature_value = base64_text(
        single(signature, "SignatureValue", "one ds:SignatureValue")?,
        "SignatureValue",
    )?;
    if digest_value.len() != 48 {
        return Err(XmlDsigError::Encoding("DigestValue"));
    }
    if signature_value.len() != 96 {
        return Err(XmlDsigError::Encoding("SignatureValue"));
    }

    // The chain first: nothing is hashed for an unknown signer.
    let x509_data = single(
        single(signature, "KeyInfo", "one ds:KeyInfo")?,
        "X509Data",
        "one ds:X509Data",
    )?;
    let mut chain = Vec::new();
    for cert in x509_data
        .children()
        .filter(|n| n.has_tag_name((DS, "X509Certificate")))
    {
        let der = base64_text(cert, "X509Certificate")?;
        chain.push(Certificate::from_der(&der).map_err(|e| XmlDsigError::Chain(e.to_string()))?);
    }
    let signer = verify_chain(&chain, root, at)?;

    // Reference: the document without the signature, canonicalized, hashed.
    let document = canonicalize(&doc, xml, top, Some(signature.id()))?;
    let digest = ring::digest::digest(&ring::digest::SHA384, &document);
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        digest.as_ref(),
        digest_value.as_slice(),
    )) {
        return Err(XmlDsigError::Digest);
    }
    // SignedInfo, canonicalized as a subtree, signed by the first certificate.
    let signed = canonicalize(&doc, xml, signed_info, None)?;
    signer
        .verify_with_key(
            &ring::signature::ECDSA_P384_SHA384_FIXED,
            &signed,
            &signature_value,
            "the RIM's SignedInfo",
        )
        .map_err(|_| XmlDsigError::Signature(signer.subject().to_owned()))?;
    let mut subjects: Vec<String> = chain.iter().map(|c| c.subject().to_owned()).collect();
    if subjects.last().map(String::as_str) != Some(root.subject()) {
        subjects.push(root.subject().to_owned());
    }
    Ok(RimSigner { chain: subjects })
}

/// The signer (first certificate), each issued by the next, the last by `root` (or
/// equal to it); every certificate valid at `at`.
fn verify_chain<'c>(
    chain: &'c [Certificate],
    root: &Certificate,
    at: OffsetDateTime,
) -> Result<&'c Certificate, XmlDsigError> {
    let chain_err = |e: crate::x509::X509Error| XmlDsigError::Chain(e.to_string());
    let mut below_root: &[Certificate] = chain;
    if let Some((last, rest)) = chain.split_last()
        && last.der() == root.der()
    {
        below_root = rest;
    }
    let Some(signer) = below_root.first() else {
        return Err(XmlDsigError::Chain(
            "KeyInfo carries no signing certificate".to_owned(),
        ));
    };
    for pair in below_root.windows(2) {
        if let [child, issuer] = pair {
            if !issuer.is_ca() {
                return Err(XmlDsigError::Chain(format!(
                    "{} is not a CA but issued {}",
                    issuer.subject(),
                    child.subject()
                )));
            }
            child.verify_issued_by(issuer).map_err(chain_err)?;
        }
    }
    if let Some(top) = below_root.last() {
        top.verify_issued_by(root).map_err(|_| {
            XmlDsigError::Chain(format!(
                "{} is not issued by the pinned {}",
                top.subject(),
                root.subject()
            ))
        })?;
    }
    for cert in below_root.iter().chain(std::iter::once(root)) {
        cert.check_valid_at(at).map_err(chain_err)?;
    }
    Ok(signer)
}

/// Inclusive canonical XML (1.1 and 1.0 agree on what is accepted here), without
/// comments, of the subtree at `apex`, leaving out the subtree `exclude`.
///
/// # Errors
/// [`XmlDsigError::Unsupported`] for what the profile does not cover (`xml:` attributes
/// on an ancestor of a subtree apex, whose C14N 1.1 inheritance rules are not
/// implemented).
pub fn canonicalize(
    doc: &Document<'_>,
    text: &str,
    apex: Node<'_, '_>,
    exclude: Option<NodeId>,
) -> Result<Vec<u8>, XmlDsigError> {
    if apex != doc.root_element()
        && apex
            .ancestors()
            .skip(1)
            .any(|a| a.attributes().any(|at| at.namespace() == Some(XML_NS)))
    {
        return Err(XmlDsigError::Unsupported {
            what: "xml: attributes above the signed subtree",
            found: apex.tag_name().name().to_owned(),
        });
    }
    let mut out = Vec::with_capacity(text.len());
    // Iterative walk: (node, whether its end tag is due).
    let mut stack: Vec<(Node<'_, '_>, bool)> = vec![(apex, false)];
    while let Some((node, closing)) = stack.pop() {
        if Some(node.id()) == exclude {
            continue;
        }
        match node.node_type() {
            NodeType::Element if closing => {
                out.extend_from_slice(b"</");
                out.extend_from_slice(element_qname(text, node).as_bytes());
                out.push(b'>');
            }
            NodeType::Element => {
                let parent_scope = if node == apex {
                    Vec::new()
                } else {
                    in_scope(node.parent_element())
                };
                start_tag(text, node, &parent_scope, &mut out);
                stack.push((node, true));
                let children: Vec<_> = node.children().collect();
                for child in children.into_iter().rev() {
                    stack.push((child, false));
                }
            }
            NodeType::Text => escape_text(node.text().unwrap_or(""), &mut out),
            NodeType::PI => {
                if let Some(pi) = node.pi() {
                    out.extend_from_slice(b"<?");
                    out.extend_from_slice(pi.target.as_bytes());
                    if let Some(value) = pi.value.filter(|v| !v.is_empty()) {
                        out.push(b' ');
                        out.extend_from_slice(value.as_bytes());
                    }
                    out.extend_from_slice(b"?>");
                }
            }
            NodeType::Comment | NodeType::Root => {}
        }
    }
    Ok(out)
}

/// The in-scope namespace declarations of `node` (prefix, URI), without `xml:` and
/// without an empty default.
fn in_scope<'a>(node: Option<Node<'a, '_>>) -> Vec<(&'a str, String)> {
    let Some(node) = node else {
        return Vec::new();
    };
    node.namespaces()
        .filter(|ns| ns.uri() != XML_NS && !(ns.name().is_none() && ns.uri().is_empty()))
        .map(|ns| (ns.name().unwrap_or(""), ns.uri().to_owned()))
        .collect()
}

/// The element's qualified name as written (prefix included).
fn element_qname<'t>(text: &'t str, node: Node<'_, '_>) -> &'t str {
    let start = node.range().start + 1;
    let rest = text.get(start..).unwrap_or("");
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    rest.get(..end).unwrap_or("")
}

fn start_tag(text: &str, node: Node<'_, '_>, parent_scope: &[(&str, String)], out: &mut Vec<u8>) {
    out.push(b'<');
    out.extend_from_slice(element_qname(text, node).as_bytes());
    let scope = in_scope(Some(node));
    let mut declared: Vec<(&str, &str)> = scope
        .iter()
        .filter(|(p, u)| !parent_scope.iter().any(|(pp, pu)| pp == p && pu == u))
        .map(|(p, u)| (*p, u.as_str()))
        .collect();
    // A default namespace in the parent's output that this element undeclares.
    if parent_scope.iter().any(|(p, _)| p.is_empty()) && !scope.iter().any(|(p, _)| p.is_empty()) {
        declared.push(("", ""));
    }
    declared.sort_by(|a, b| a.0.cmp(b.0));
    for (prefix, uri) in declared {
        if prefix.is_empty() {
            out.extend_from_slice(b" xmlns=\"");
        } else {
            out.extend_from_slice(b" xmlns:");
            out.extend_from_slice(prefix.as_bytes());
            out.extend_from_slice(b"=\"");
        }
        escape_attr(uri, out);
        out.push(b'"');
    }
    let mut attrs: Vec<_> = node.attributes().collect();
    attrs.sort_by(|a, b| {
        (a.namespace().unwrap_or(""), a.name()).cmp(&(b.namespace().unwrap_or(""), b.name()))
    });
    for attr in attrs {
        out.push(b' ');
        out.extend_from_slice(text.get(attr.range_qname()).unwrap_or("").as_bytes());
        out.extend_from_slice(b"=\"");
        escape_attr(attr.value(), out);
        out.push(b'"');
    }
    out.push(b'>');
}

fn escape_text(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

fn escape_attr(s: &str, out: &mut Vec<u8>) {
    for c in s.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '"' => out.extend_from_slice(b"&quot;"),
            '\t' => out.extend_from_slice(b"&#x9;"),
            '\n' => out.extend_from_slice(b"&#xA;"),
            '\r' => out.extend_from_slice(b"&#xD;"),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c14n(xml: &str) -> String {
        let doc = Document::parse(xml).unwrap();
        String::from_utf8(canonicalize(&doc, xml, doc.root_element(), None).unwrap()).unwrap()
    }

    #[test]
    fn canonical_form_of_the_w3c_examples_features() {
        // Attribute and namespace order, empty elements, escaping, superfluous
        // declarations dropped, comments dropped (C14N 1.0 §3.3, §3.2 features).
        assert_eq!(
            c14n(
                "<doc xmlns:b=\"http://b\" xmlns:a=\"http://a\"><!-- c --><e b:y=\"1\" a:x=\"2\" z='3' xmlns:a=\"http://a\"/><t>&lt;&amp;&gt;\"</t></doc>"
            ),
            "<doc xmlns:a=\"http://a\" xmlns:b=\"http://b\"><e z=\"3\" a:x=\"2\" b:y=\"1\"></e><t>&lt;&amp;&gt;\"</t></doc>"
        );
        assert_eq!(
            c14n("<a xmlns=\"http://d\"><b xmlns=\"\"><c attr=\"x&#9;y&#10;\"/></b></a>"),
            "<a xmlns=\"http://d\"><b xmlns=\"\"><c attr=\"x&#x9;y&#xA;\"></c></b></a>"
        );
    }

    #[test]
    fn a_subtree_renders_the_namespaces_it_inherits() {
        let xml = "<r xmlns=\"http://d\" xmlns:p=\"http://p\"><s xmlns:q=\"http://q\"><t p:a=\"1\"/></s></r>";
        let doc = Document::parse(xml).unwrap();
        let s = doc.root_element().first_element_child().unwrap();
        let out = String::from_utf8(canonicalize(&doc, xml, s, None).unwrap()).unwrap();
        assert_eq!(
            out,
            "<s xmlns=\"http://d\" xmlns:p=\"http://p\" xmlns:q=\"http://q\"><t p:a=\"1\"></t></s>"
        );
    }
}
