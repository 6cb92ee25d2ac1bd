//! Command-layer tests: golden command bytes, scripted responses, parse errors.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::collections::VecDeque;

use crate::response::*;
use crate::*;

/// A transport that checks each command against an expectation and replays a response.
#[derive(Debug, Default)]
struct Script {
    steps: VecDeque<(Option<Vec<u8>>, Vec<u8>)>,
    sent: Vec<Vec<u8>>,
}

impl Script {
    fn expect(mut self, cmd: &[u8], rsp: &[u8]) -> Self {
        self.steps.push_back((Some(cmd.to_vec()), rsp.to_vec()));
        self
    }
    fn reply(mut self, rsp: &[u8]) -> Self {
        self.steps.push_back((None, rsp.to_vec()));
        self
    }
    fn done(&self) {
        assert!(
            self.steps.is_empty(),
            "unused steps: {:?}",
            self.steps.len()
        );
    }
}

impl Transport for Script {
    type Error = &'static str;
    fn transact(&mut self, command: &[u8], response: &mut [u8]) -> Result<usize, Self::Error> {
        self.sent.push(command.to_vec());
        let (want, rsp) = self.steps.pop_front().ok_or("no step")?;
        if let Some(want) = want {
            assert_eq!(hex(command), hex(&want), "command bytes");
        }
        response[..rsp.len()].copy_from_slice(&rsp);
        Ok(rsp.len())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A success response with the given handles and parameters (with a sessions area if
/// `sessions`).
fn ok_response(handles: &[u32], params: &[u8], sessions: bool) -> Vec<u8> {
    let mut body = Vec::new();
    for h in handles {
        body.extend_from_slice(&h.to_be_bytes());
    }
    if sessions {
        body.extend_from_slice(&(params.len() as u32).to_be_bytes());
        body.extend_from_slice(params);
        // one empty response auth per session: nonce, attributes, hmac
        body.extend_from_slice(&[0, 0, 0, 0, 0]);
    } else {
        body.extend_from_slice(params);
    }
    let mut v = vec![];
    v.extend_from_slice(&(if sessions { 0x8002u16 } else { 0x8001 }).to_be_bytes());
    v.extend_from_slice(&((body.len() + 10) as u32).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&body);
    v
}

fn rc_response(rc: u32) -> Vec<u8> {
    let mut v = unhex("8001 0000000a");
    v.extend_from_slice(&rc.to_be_bytes());
    v
}

#[test]
fn startup_golden_and_already_started() {
    let cmd = unhex("8001 0000000c 00000144 0000");
    let s = Script::default()
        .expect(&cmd, &ok_response(&[], &[], false))
        .expect(&cmd, &rc_response(0x100))
        .expect(&cmd, &rc_response(0x101));
    let mut tpm: Tpm<_> = Tpm::new(s);
    assert_eq!(tpm.startup(StartupType::Clear), Ok(Startup::Started));
    assert_eq!(tpm.startup(StartupType::Clear), Ok(Startup::AlreadyStarted));
    assert_eq!(
        tpm.startup(StartupType::Clear),
        Err(CommandError::Tpm(ResponseCode::FAILURE))
    );
    tpm.release().done();
}

#[test]
fn get_random_golden() {
    let cmd = unhex("8001 0000000c 0000017b 0008");
    let s = Script::default().expect(
        &cmd,
        &ok_response(&[], &unhex("0008 0102030405060708"), false),
    );
    let mut tpm: Tpm<_, 1024> = Tpm::new(s);
    let mut out = [0u8; 8];
    tpm.get_random(&mut out).unwrap();
    assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8]);
    tpm.release().done();
}

#[test]
fn get_random_rejects_empty_and_oversized_answers() {
    let s = Script::default()
        .reply(&ok_response(&[], &unhex("0000"), false))
        .reply(&ok_response(&[], &unhex("0003 010203"), false));
    let mut tpm: Tpm<_, 1024> = Tpm::new(s);
    let mut out = [0u8; 2];
    assert!(matches!(
        tpm.get_random(&mut out),
        Err(CommandError::Malformed(_))
    ));
    assert!(matches!(
        tpm.get_random(&mut out),
        Err(CommandError::Malformed(_))
    ));
}

#[test]
fn pcr_read_golden_and_parse() {
    let cmd = unhex("8001 00000014 0000017e 00000001 000b 03 070000");
    let mut params = unhex("00000005 00000001 000b 03 070000 00000003");
    for i in 0..3u8 {
        params.extend_from_slice(&[0, 32]);
        params.extend_from_slice(&[i; 32]);
    }
    let s = Script::default().expect(&cmd, &ok_response(&[], &params, false));
    let mut tpm: Tpm<_, 1024> = Tpm::new(s);
    let v = tpm
        .pcr_read(&[PcrBank {
            alg: ALG_SHA256,
            pcrs: 0b111,
        }])
        .unwrap();
    assert_eq!(v.update_counter, 5);
    assert_eq!(
        v.selection.as_slice(),
        &[PcrBank {
            alg: ALG_SHA256,
            pcrs: 7
        }]
    );
    assert_eq!(v.digests().len(), 3);
    assert_eq!(v.digests()[2].as_slice(), &[2u8; 32]);
    tpm.release().done();
}

#[test]
fn pcr_extend_golden_with_password_session() {
    let mut cmd =
        unhex("8002 00000041 00000182 00000000 00000009 40000009 0000 00 0000 00000001 000b");
    cmd.extend_from_slice(&[0xAB; 32]);
    let s = Script::default().expect(&cmd, &ok_response(&[], &[], true));
    let mut tpm: Tpm<_, 1024> = Tpm::new(s);
    tpm.pcr_extend(0, &[(ALG_SHA256, &[0xAB; 32])]).unwrap();
    tpm.release().done();
}

#[test]
fn pcr_extend_active_banks_hashes_each_bank() {
    // Banks: SHA-1 with no PCRs (inactive), SHA-256 with 24 PCRs.
    let banks = unhex("00 00000005 00000002 0004 03 000000 000b 03 ffffff");
    let mut cmd =
        unhex("8002 00000041 00000182 00000007 00000009 40000009 0000 00 0000 00000001 000b");
    cmd.extend_from_slice(&[0x11; 32]);
    let s = Script::default()
        .expect(
            &unhex("8001 00000016 0000017a 00000005 00000000 00000001"),
            &ok_response(&[], &banks, false),
        )
        .expect(&cmd, &ok_response(&[], &[], true));
    let mut tpm: Tpm<_, 1024> = Tpm::new(s);
    let mut asked = vec![];
    tpm.pcr_extend_active_banks(7, |alg, out| {
        asked.push(alg);
        out[..32].fill(0x11);
        Some(32)
    })
    .unwrap();
    assert_eq!(asked, vec![ALG_SHA256]);
    tpm.release().done();
}

#[test]
fn ek_templates_golden() {
    let mut buf = [0u8; 512];
    let mut w = crate::wire::Writer::new(&mut buf);
    crate::command::ek_template(EkKind::EccP256, &mut w).unwrap();
    let n = w.len();
    let mut want = unhex("0023 000b 000300b2 0020");
    want.extend_from_slice(&EK_AUTH_POLICY);
    want.extend(unhex("0006 0080 0043 0010 0003 0010 0020"));
    want.extend_from_slice(&[0; 32]);
    want.extend(unhex("0020"));
    want.extend_from_slice(&[0; 32]);
    assert_eq!(hex(&buf[..n]), hex(&want));

    let mut w = crate::wire::Writer::new(&mut buf);
    crate::command::ek_template(EkKind::Rsa2048, &mut w).unwrap();
    let n = w.len();
    let mut want = unhex("0001 000b 000300b2 0020");
    want.extend_from_slice(&EK_AUTH_POLICY);
    want.extend(unhex("0006 0080 0043 0010 0800 00000000 0100"));
    want.extend_from_slice(&[0; 256]);
    assert_eq!(hex(&buf[..n]), hex(&want));
}

/// The EK policy session sub-sequence: GetRandom(16), StartAuthSession, PolicySecret.
fn ek_session_steps(s: Script, session: u32) -> Script {
    let mut nonce = unhex("0010");
    nonce.extend_from_slice(&[0x5A; 16]);
    let mut sas = unhex("8001 0000002b 00000176 40000007 40000007 0010");
    sas.extend_from_slice(&[0x5A; 16]);
    sas.extend(unhex("0000 01 0010 000b"));
    let mut ps = unhex("8002 00000029 00000151 4000000b");
    ps.extend_from_slice(&session.to_be_bytes());
    ps.extend(unhex(
        "00000009 40000009 0000 00 0000 0000 0000 0000 00000000",
    ));
    s.expect(
        &unhex("8001 0000000c 0000017b 0010"),
        &ok_response(&[], &nonce, false),
    )
    .expect(
        &sas,
        &ok_response(
            &[session],
            &unhex("0010 00112233445566778899aabbccddeeff"),
            false,
        ),
    )
    .expect(
        &ps,
        &ok_response(&[], &unhex("0000 8021 40000007 0000"), true),
    )
}

fn ecc_public(x: u8) -> Vec<u8> {
    let mut area = unhex("0023 000b 00050472 0000 0010 0018 000b 0003 0010 0020");
    area.extend_from_slice(&[x; 32]);
    area.extend(unhex("0020"));
    area.extend_from_slice(&[x + 1; 32]);
    let mut v = (area.len() as u16).to_be_bytes().to_vec();
    v.extend(area);
    v
}

#[test]
fn ak_flow_create_load_activate_quote() {
    let ek = 0x8000_0000;
    let session = 0x0300_0000;
    let public = ecc_public(7);
    let private = unhex("0004 deadbeef");
    let mut create_params = private.clone();
    create_params.extend_from_slice(&public);
    // creationData (empty), creationHash (empty), ticket (tag, hierarchy, empty digest)
    create_params.extend(unhex("0000 0000 8021 4000000b 0000"));
    let mut s = ek_session_steps(Script::default(), session);
    s = s.reply(&ok_response(&[], &create_params, true));
    s = ek_session_steps(s, session);
    s = s.reply(&ok_response(&[0x8000_0001], &unhex("0004 000b abcd"), true));
    s = ek_session_steps(s, session);
    s = s.reply(&ok_response(&[], &unhex("0004 c0ffee00"), true));
    let mut quote = unhex("0006 ff544347 8018");
    quote.extend(unhex("0018 000b 0002 1111 0002 2222"));
    s = s.reply(&ok_response(&[], &quote, true));

    let mut tpm: Tpm<_> = Tpm::new(s);
    let ak = tpm.create_ak(ek, AkKind::EccP256).unwrap();
    assert_eq!(ak.public.as_tpm2b(), &public[..]);
    assert_eq!(ak.private.as_slice(), &private[..]);
    let (x, y) = ak.public.ecc_point().unwrap();
    assert_eq!((x[0], y[0]), (7, 8));
    assert_eq!(ak.public.parsed().attributes, AK_ATTRIBUTES);
    let loaded = tpm.load(ek, Auth::EkPolicy, &ak).unwrap();
    assert_eq!(loaded.handle, 0x8000_0001);
    assert_eq!(loaded.name.as_slice(), &[0x00, 0x0b, 0xab, 0xcd]);
    let cred = tpm
        .activate_credential(loaded.handle, ek, &[1, 2], &[3, 4])
        .unwrap();
    assert_eq!(cred.as_slice(), &[0xc0, 0xff, 0xee, 0x00]);
    let q = tpm
        .quote(
            loaded.handle,
            b"nonce",
            &[PcrBank {
                alg: ALG_SHA256,
                pcrs: 1,
            }],
        )
        .unwrap();
    assert_eq!(q.attest.as_slice(), &unhex("ff544347 8018")[..]);
    assert_eq!(
        q.signature.as_slice(),
        &unhex("0018 000b 0002 1111 0002 2222")[..]
    );

    let script = tpm.release();
    script.done();
    // The Create command is authorized by the policy session, not a password.
    let create = &script.sent[3];
    assert_eq!(&create[6..10], &[0, 0, 0x01, 0x53]);
    assert_eq!(&create[10..14], &ek.to_be_bytes());
    assert_eq!(&create[18..22], &session.to_be_bytes());
    // ActivateCredential: AK with a password, then EK with the policy session.
    let act = &script.sent[11];
    assert_eq!(&act[6..10], &[0, 0, 0x01, 0x47]);
    assert_eq!(hex(&act[18..36]), "000000124000000900000000000300000000");
    // Quote: handle, password auth, qualifying data, NULL scheme, selection.
    let q = &script.sent[12];
    assert_eq!(hex(&q[27..]), "00056e6f6e6365001000000001000b03010000");
}

#[test]
fn failed_command_flushes_the_ek_session() {
    let session = 0x0300_0000;
    let s = ek_session_steps(Script::default(), session)
        .reply(&rc_response(0x98e)) // Create fails: TPM_RC_POLICY_FAIL on session 1
        .expect(
            &unhex("8001 0000000e 00000165 03000000"),
            &ok_response(&[], &[], false),
        );
    let mut tpm: Tpm<_> = Tpm::new(s);
    assert_eq!(
        tpm.create_ak(0x8000_0000, AkKind::Rsa2048).unwrap_err(),
        CommandError::Tpm(ResponseCode(0x98e))
    );
    tpm.release().done();
}

#[test]
fn nv_read_in_chunks_bounded_by_nv_buffer_max() {
    let index = EkKind::Rsa2048.certificate_index();
    // NV public: index, nameAlg, attributes, empty policy, dataSize 5
    let nv_pub = unhex("000e 01c00002 000b 00000000 0000 0005 0004 000b 1234");
    let s = Script::default()
        .expect(
            &unhex("8001 0000000e 00000169 01c00002"),
            &ok_response(&[], &nv_pub, false),
        )
        .expect(
            &unhex("8001 00000016 0000017a 00000006 0000012c 00000001"),
            &ok_response(&[], &unhex("00 00000006 00000001 0000012c 00000002"), false),
        )
        .expect(
            &unhex(
                "8002 00000023 0000014e 40000001 01c00002 00000009 40000009 0000 00 0000 0002 0000",
            ),
            &ok_response(&[], &unhex("0002 aabb"), true),
        )
        .expect(
            &unhex(
                "8002 00000023 0000014e 40000001 01c00002 00000009 40000009 0000 00 0000 0002 0002",
            ),
            &ok_response(&[], &unhex("0002 ccdd"), true),
        )
        .expect(
            &unhex(
                "8002 00000023 0000014e 40000001 01c00002 00000009 40000009 0000 00 0000 0001 0004",
            ),
            &ok_response(&[], &unhex("0001 ee"), true),
        );
    let mut tpm: Tpm<_, 1024> = Tpm::new(s);
    let mut out = [0u8; 16];
    let n = tpm.nv_read(index, RH_OWNER, &mut out).unwrap();
    assert_eq!(&out[..n], &[0xaa, 0xbb, 0xcc, 0xdd, 0xee]);
    tpm.release().done();
}

#[test]
fn retry_warning_resends_the_same_command_bounded() {
    let cmd = unhex("8001 0000000e 00000165 80000001");
    let s = Script::default()
        .expect(&cmd, &rc_response(0x922))
        .expect(&cmd, &rc_response(0x908))
        .expect(&cmd, &ok_response(&[], &[], false));
    let mut tpm: Tpm<_, 256> = Tpm::new(s);
    tpm.flush_context(0x8000_0001).unwrap();
    tpm.release().done();

    // 20 ms doubling to 2.56 s: 9 tries, then the code is returned.
    let mut s = Script::default();
    for _ in 0..9 {
        s = s.expect(&cmd, &rc_response(0x90A));
    }
    let mut tpm: Tpm<_, 256> = Tpm::new(s);
    assert_eq!(
        tpm.flush_context(0x8000_0001),
        Err(CommandError::Tpm(ResponseCode::TESTING))
    );
    tpm.release().done();
}

#[test]
fn flush_context_golden() {
    let s = Script::default().expect(
        &unhex("8001 0000000e 00000165 80000001"),
        &ok_response(&[], &[], false),
    );
    let mut tpm: Tpm<_, 256> = Tpm::new(s);
    tpm.flush_context(0x8000_0001).unwrap();
    tpm.release().done();
}

#[test]
fn transport_errors_stay_transport_errors() {
    let mut tpm: Tpm<_, 256> = Tpm::new(Script::default());
    assert_eq!(
        tpm.flush_context(1),
        Err(CommandError::Transport("no step"))
    );
}

#[test]
fn envelope_rejects_bad_frames() {
    let good = ok_response(&[], &unhex("0002 aabb"), false);
    assert!(parse_get_random(&good).is_ok());
    // short
    assert!(matches!(
        parse_get_random(&good[..5]),
        Err(ResponseError::Malformed(Malformed {
            kind: MalformedKind::Truncated,
            ..
        }))
    ));
    // size field larger / smaller than the frame
    let mut bad = good.clone();
    bad[5] += 1;
    assert!(matches!(
        parse_get_random(&bad),
        Err(ResponseError::Malformed(Malformed {
            kind: MalformedKind::SizeMismatch,
            ..
        }))
    ));
    // wrong tag
    let mut bad = good.clone();
    bad[0] = 0x00;
    bad[1] = 0xC4;
    assert!(matches!(
        parse_get_random(&bad),
        Err(ResponseError::Malformed(Malformed {
            kind: MalformedKind::BadTag,
            ..
        }))
    ));
    // error code with a body
    let mut bad = unhex("8001 0000000c 00000101 0000");
    assert!(matches!(
        parse_get_random(&bad),
        Err(ResponseError::Malformed(_))
    ));
    bad.truncate(10);
    bad[5] = 10;
    assert_eq!(
        parse_get_random(&bad),
        Err(ResponseError::Tpm(ResponseCode::FAILURE))
    );
    // TPM2B longer than the frame
    let bad = ok_response(&[], &unhex("0009 aabb"), false);
    assert!(matches!(
        parse_get_random(&bad),
        Err(ResponseError::Malformed(_))
    ));
    // trailing bytes after the parameters
    let bad = ok_response(&[], &unhex("0002 aabb cc"), false);
    assert!(matches!(
        parse_get_random(&bad),
        Err(ResponseError::Malformed(Malformed {
            kind: MalformedKind::TrailingData,
            ..
        }))
    ));
    // a sessions response whose parameterSize overruns
    let mut bad = ok_response(&[], &unhex("0002 aabb"), true);
    bad[13] = 0xff;
    assert!(parse_get_random(&bad).is_err());
}

#[test]
fn tpm2_tools_credential_file() {
    let f = unhex("badcc0de 00000001 0002 0102 0003 030405");
    assert_eq!(
        parse_tpm2_tools_credential(&f).unwrap(),
        (&[1u8, 2][..], &[3u8, 4, 5][..])
    );
    assert!(parse_tpm2_tools_credential(&f[..7]).is_err());
}

#[test]
fn public_accessors() {
    let p = Public::from_tpm2b(&ecc_public(3)).unwrap();
    assert_eq!(p.parsed().object_type, ALG_ECC);
    assert!(p.rsa_modulus().is_none());
    let mut rsa = unhex("0001 000b 000300b2 0000 0006 0080 0043 0010 0800 00000000 0004 01020304");
    let mut v = (rsa.len() as u16).to_be_bytes().to_vec();
    v.append(&mut rsa);
    let p = Public::from_tpm2b(&v).unwrap();
    assert_eq!(p.rsa_modulus(), Some(&[1u8, 2, 3, 4][..]));
    assert!(Public::from_tpm2b(&v[..v.len() - 1]).is_err());
}

mod props {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn response_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            crate::fuzz_all_parsers(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_valid_envelopes(
            tag in prop_oneof![Just(0x8001u16), Just(0x8002u16)],
            body in proptest::collection::vec(any::<u8>(), 0..400),
        ) {
            let mut v = tag.to_be_bytes().to_vec();
            v.extend_from_slice(&((body.len() + 10) as u32).to_be_bytes());
            v.extend_from_slice(&0u32.to_be_bytes());
            v.extend_from_slice(&body);
            crate::fuzz_all_parsers(&v);
        }
    }
}

#[test]
fn ecdh_zgen_sends_the_point_and_returns_the_shared_x_left_padded() {
    let (x, y) = ([0x11u8; 32], [0x22u8; 32]);
    let mut cmd = unhex("8002 0000 0000 0000 0154 8000 0001 0000 0009 4000 0009 0000 00 0000");
    cmd.extend_from_slice(&[0x00, 0x44, 0x00, 0x20]);
    cmd.extend_from_slice(&x);
    cmd.extend_from_slice(&[0x00, 0x20]);
    cmd.extend_from_slice(&y);
    let len = cmd.len() as u32;
    cmd[2..6].copy_from_slice(&len.to_be_bytes());
    // outPoint: a 31-byte x (a leading zero byte dropped) and a 32-byte y.
    let mut point = vec![0x00, 0x1F];
    point.extend_from_slice(&[0x33; 31]);
    point.extend_from_slice(&[0x00, 0x20]);
    point.extend_from_slice(&[0x44; 32]);
    let mut params = (point.len() as u16).to_be_bytes().to_vec();
    params.extend_from_slice(&point);
    let script = Script::default().expect(&cmd, &ok_response(&[], &params, true));
    let mut tpm: Tpm<Script, 1024> = Tpm::new(script);
    let mut z = [0xFFu8; 32];
    tpm.ecdh_zgen(0x8000_0001, &x, &y, &mut z).unwrap();
    assert_eq!(z[0], 0);
    assert_eq!(&z[1..], &[0x33; 31]);
    tpm.transport_mut().done();

    // A point off the curve is the TPM's refusal, as data.
    let refused = unhex("8001 0000 000a 0000 01e7");
    let mut tpm: Tpm<Script, 1024> = Tpm::new(Script::default().reply(&refused));
    assert_eq!(
        tpm.ecdh_zgen(0x8000_0001, &x, &y, &mut z),
        Err(CommandError::Tpm(ResponseCode(0x1E7)))
    );
}

#[test]
fn the_ecdh_key_is_an_unrestricted_p256_decryption_key_in_the_null_hierarchy() {
    let mut tpm: Tpm<Script, 1024> =
        Tpm::new(Script::default().reply(&unhex("8001 0000 000a 0000 0101")));
    let _ = tpm.create_ecdh_key(&[0xAB; 32]);
    let sent = &tpm.transport_mut().sent[0];
    // CreatePrimary on TPM_RH_NULL.
    assert_eq!(&sent[6..14], &unhex("0000 0131 4000 0007")[..]);
    let template = unhex("0023 000b 00020472 0000 0010 0010 0003 0010 0020");
    let at = sent
        .windows(template.len())
        .position(|w| w == template.as_slice())
        .expect("the ECDH template");
    assert_eq!(
        &sent[at + template.len()..at + template.len() + 32],
        &[0xAB; 32]
    );
}
