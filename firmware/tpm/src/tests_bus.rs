//! Scripted-bus tests of the SPI and I2C transports and the TIS core.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as PinTx};
use embedded_hal_mock::eh1::i2c::{Mock as I2cMock, Transaction as I2cTx};
use embedded_hal_mock::eh1::spi::{Mock as SpiMock, Transaction as SpiTx};

use crate::test_util::FakeClock;
use crate::*;

// ---- SPI ----

fn cs_frame() -> [PinTx; 2] {
    [PinTx::set(State::Low), PinTx::set(State::High)]
}

#[test]
fn spi_read_sts_header_and_data() {
    let mut spi = SpiMock::new(&[
        SpiTx::transfer_in_place(vec![0x83, 0xD4, 0x00, 0x18], vec![0, 0, 0, 1]),
        SpiTx::read_vec(vec![0x80, 0x00, 0x01, 0x00]),
        SpiTx::flush(),
    ]);
    let mut cs = PinMock::new(&cs_frame());
    let mut t = SpiTransport::new(spi.clone(), cs.clone());
    let mut buf = [0u8; 4];
    t.read(0, Register::Sts, &mut buf).unwrap();
    assert_eq!(buf, [0x80, 0x00, 0x01, 0x00]);
    spi.done();
    cs.done();
}

#[test]
fn spi_write_with_wait_states_holds_cs() {
    // Locality 2 ACCESS: address 0xD42000. Two wait-state bytes, then ready.
    let mut spi = SpiMock::new(&[
        SpiTx::transfer_in_place(vec![0x00, 0xD4, 0x20, 0x00], vec![0, 0, 0, 0]),
        SpiTx::transfer_in_place(vec![0x00], vec![0x00]),
        SpiTx::transfer_in_place(vec![0x00], vec![0x00]),
        SpiTx::transfer_in_place(vec![0x00], vec![0x01]),
        SpiTx::write_vec(vec![0x02]),
        SpiTx::flush(),
    ]);
    let mut cs = PinMock::new(&cs_frame());
    let mut t = SpiTransport::new(spi.clone(), cs.clone());
    t.write(2, Register::Access, &[0x02]).unwrap();
    spi.done();
    cs.done();
}

#[test]
fn spi_wait_state_exhaustion_releases_cs() {
    let mut expected = vec![SpiTx::transfer_in_place(
        vec![0x80, 0xD4, 0x0F, 0x00],
        vec![0, 0, 0, 0],
    )];
    for _ in 0..SPI_WAIT_STATE_RETRIES {
        expected.push(SpiTx::transfer_in_place(vec![0x00], vec![0x00]));
    }
    expected.push(SpiTx::flush());
    let mut spi = SpiMock::new(&expected);
    let mut cs = PinMock::new(&cs_frame());
    let mut t = SpiTransport::new(spi.clone(), cs.clone());
    let mut buf = [0u8; 1];
    let err = t.read(0, Register::DidVid, &mut buf).unwrap_err();
    assert_eq!(err, Error::Timeout(TimeoutKind::SpiWaitState));
    spi.done();
    cs.done();
}

#[test]
fn spi_rejects_oversized_frame_without_bus_traffic() {
    let mut spi = SpiMock::new(&[]);
    let mut cs = PinMock::new(&[]);
    let mut t = SpiTransport::new(spi.clone(), cs.clone());
    let err = t.write(0, Register::DataFifo, &[0u8; 65]).unwrap_err();
    assert_eq!(err, Error::Usage(UsageError::TransferTooLong(65)));
    let err = t.write(5, Register::DataFifo, &[0u8; 1]).unwrap_err();
    assert_eq!(err, Error::Usage(UsageError::Locality(5)));
    spi.done();
    cs.done();
}

#[test]
fn spi_max_frame_header() {
    let mut spi = SpiMock::new(&[
        SpiTx::transfer_in_place(vec![0x3F, 0xD4, 0x10, 0x24], vec![0, 0, 0, 1]),
        SpiTx::write_vec(vec![0xAA; 64]),
        SpiTx::flush(),
    ]);
    let mut cs = PinMock::new(&cs_frame());
    let mut t = SpiTransport::new(spi.clone(), cs.clone());
    t.write(1, Register::DataFifo, &[0xAA; 64]).unwrap();
    let _ = t.release();
    spi.done();
    cs.done();
}

// ---- I2C ----

const ADDR: u8 = 0x2E;

fn w(bytes: &[u8]) -> I2cTx {
    I2cTx::write(ADDR, bytes.to_vec())
}

fn r(reg: u8, data: &[u8]) -> [I2cTx; 2] {
    [w(&[reg]), I2cTx::read(ADDR, data.to_vec())]
}

fn nack(bytes: &[u8]) -> I2cTx {
    w(bytes).with_error(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
}

#[test]
fn i2c_register_read_selects_locality_once() {
    let mut e = vec![w(&[0x00, 0x00])];
    e.extend(r(0x18, &[0x80, 0, 0x10, 0]));
    e.extend(r(0x48, &[0x14, 0x10, 0x01, 0x00]));
    let mut i2c = I2cMock::new(&e);
    let mut t = I2cTransport::new(i2c.clone(), NoopDelay::new());
    let mut b = [0u8; 4];
    t.read(0, Register::Sts, &mut b).unwrap();
    assert_eq!(b, [0x80, 0, 0x10, 0]);
    t.read(0, Register::DidVid, &mut b).unwrap();
    assert_eq!(u32::from_le_bytes(b), 0x0001_1014);
    i2c.done();
}

#[test]
fn i2c_retries_nack_then_succeeds() {
    let mut i2c = I2cMock::new(&[
        nack(&[0x00, 0x03]),
        nack(&[0x00, 0x03]),
        w(&[0x00, 0x03]),
        w(&[0x04, 0x02]),
    ]);
    let mut t = I2cTransport::new(i2c.clone(), NoopDelay::new());
    t.write(3, Register::Access, &[0x02]).unwrap();
    i2c.done();
}

#[test]
fn i2c_nack_budget_is_bounded() {
    let e: Vec<_> = (0..I2C_NACK_RETRIES).map(|_| nack(&[0x00, 0x00])).collect();
    let mut i2c = I2cMock::new(&e);
    let mut t = I2cTransport::new(i2c.clone(), NoopDelay::new());
    let err = t.write(0, Register::Access, &[0x02]).unwrap_err();
    assert_eq!(err, Error::Timeout(TimeoutKind::I2cNack));
    i2c.done();
}

#[test]
fn i2c_other_bus_errors_are_not_retried() {
    let mut i2c = I2cMock::new(&[w(&[0x00, 0x00]).with_error(ErrorKind::ArbitrationLoss)]);
    let mut t = I2cTransport::new(i2c.clone(), NoopDelay::new());
    let err = t.write(0, Register::Access, &[0x02]).unwrap_err();
    assert_eq!(err, Error::Bus(ErrorKind::ArbitrationLoss));
    i2c.done();
}

#[test]
fn i2c_init_reads_guard_time_and_enables_checksum() {
    // Guard flags set, guard time 100 µs (100 << 9 = 0xC800).
    let cap: u32 = 0x0010_0000 | (100 << 9);
    let mut e = vec![w(&[0x00, 0x00])];
    e.extend(r(0x30, &cap.to_le_bytes()));
    e.push(w(&[0x40, 0x01]));
    e.extend(r(0x40, &[0x01]));
    let mut i2c = I2cMock::new(&e);
    let mut t = I2cTransport::new(i2c.clone(), NoopDelay::new());
    t.init(0).unwrap();
    assert_eq!(t.guard_time_us(), 100);
    assert!(t.checksum_enabled());
    i2c.done();
}

#[test]
fn i2c_init_rejects_glitched_capability() {
    let mut e = vec![w(&[0x00, 0x00])];
    e.extend(r(0x30, &[0xFF; 4]));
    let mut i2c = I2cMock::new(&e);
    let mut t = I2cTransport::new(i2c.clone(), NoopDelay::new());
    assert!(matches!(
        t.init(0),
        Err(Error::Protocol(ProtocolError::MustBeZero { .. }))
    ));
    i2c.done();
}

// ---- TIS core over I2C ----

const GET_RANDOM_8: [u8; 12] = [
    0x80, 0x01, 0x00, 0x00, 0x00, 0x0C, 0x00, 0x00, 0x01, 0x7B, 0x00, 0x08,
];

fn get_random_response() -> Vec<u8> {
    let mut v = vec![
        0x80, 0x01, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08,
    ];
    v.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    v
}

fn sts(low: u8, burst: u16) -> [u8; 4] {
    let [b1, b2] = burst.to_le_bytes();
    [low, b1, b2, 0]
}

/// Locality request from reset (QEMU: ACCESS 0x81, then 0xA1).
fn locality_request() -> Vec<I2cTx> {
    let mut e = vec![w(&[0x00, 0x00])];
    e.extend(r(0x04, &[0x81]));
    e.push(w(&[0x04, 0x02]));
    e.extend(r(0x04, &[0xA1]));
    e
}

/// The ACCESS read before each command once the locality is ours (Linux's `check_locality`),
/// and after a failed command (was the TPM reset?).
fn access_ours() -> Vec<I2cTx> {
    r(0x04, &[0xA1]).to_vec()
}

/// The send half of the handshake for GET_RANDOM_8, burst count 4096 (clamped to 64).
fn send_script(csum: Option<u16>) -> Vec<I2cTx> {
    let mut e = Vec::new();
    e.extend(r(0x18, &sts(0xC0, 0x1000))); // commandReady already set
    let mut first = vec![0x24];
    first.extend_from_slice(&GET_RANDOM_8[..11]);
    e.push(w(&first)); // all but the last byte
    e.extend(r(0x18, &sts(0x88, 0x1000))); // stsValid | Expect
    e.push(w(&[0x24, 0x08])); // last byte
    e.extend(r(0x18, &sts(0x80, 0x1000))); // stsValid, Expect clear
    if let Some(c) = csum {
        e.extend(r(0x44, &c.to_be_bytes()));
    }
    e.push(w(&[0x18, 0x20])); // tpmGo
    e
}

fn receive_script(rsp: &[u8], csum: Option<u16>) -> Vec<I2cTx> {
    let mut e = Vec::new();
    e.extend(r(0x18, &sts(0x90, 0x1000)));
    e.extend(r(0x18, &sts(0x90, 0x1000)));
    e.extend(r(0x24, &rsp[..10]));
    e.extend(r(0x18, &sts(0x90, 0x1000)));
    e.extend(r(0x24, &rsp[10..]));
    e.extend(r(0x18, &sts(0x80, 0x1000)));
    if let Some(c) = csum {
        e.extend(r(0x44, &c.to_be_bytes()));
    }
    e
}

#[test]
fn tis_handshake_get_random() {
    let rsp = get_random_response();
    let mut e = locality_request();
    e.extend(send_script(None));
    e.extend(receive_script(&rsp, None));
    e.push(w(&[0x18, 0x40])); // commandReady: release the buffer
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    );
    let mut buf = [0u8; 64];
    let n = tis.transact(&GET_RANDOM_8, &mut buf).unwrap();
    assert_eq!(&buf[..n], &rsp[..]);
    i2c.done();
}

/// init(): locality, I2C set-up with checksum, capability and DID_VID.
fn init_script() -> Vec<I2cTx> {
    let mut e = locality_request();
    e.extend(r(0x30, &0x0260_0082u32.to_le_bytes()));
    e.push(w(&[0x40, 0x01]));
    e.extend(r(0x40, &[0x01]));
    e.extend(r(0x30, &0x0260_0082u32.to_le_bytes()));
    e.extend(r(0x48, &0x0001_1014u32.to_le_bytes()));
    e
}

#[test]
fn tis_checksum_mismatch_rereads_response() {
    let rsp = get_random_response();
    let good = crc16_kermit(&rsp);
    let mut e = init_script();
    e.extend(access_ours());
    e.extend(send_script(Some(crc16_kermit(&GET_RANDOM_8))));
    e.extend(receive_script(&rsp, Some(good ^ 0x5555)));
    e.push(w(&[0x18, 0x02])); // responseRetry
    e.extend(receive_script(&rsp, Some(good))[2..].iter().cloned()); // no dataAvail wait
    e.push(w(&[0x18, 0x40]));
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    );
    assert_eq!(tis.init().unwrap(), 0x0001_1014);
    let mut buf = [0u8; 64];
    let n = tis.transact(&GET_RANDOM_8, &mut buf).unwrap();
    assert_eq!(&buf[..n], &rsp[..]);
    i2c.done();
}

#[test]
fn tis_command_checksum_mismatch_aborts_and_resends() {
    let rsp = get_random_response();
    let cmd_crc = crc16_kermit(&GET_RANDOM_8);
    let mut e = init_script();
    e.extend(access_ours());
    e.extend(send_script(Some(cmd_crc ^ 1)));
    e.pop(); // no tpmGo after a mismatch...
    e.push(w(&[0x18, 0x40])); // ...but an abort
    e.extend(send_script(Some(cmd_crc)));
    e.extend(receive_script(&rsp, Some(crc16_kermit(&rsp))));
    e.push(w(&[0x18, 0x40]));
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    );
    tis.init().unwrap();
    let mut buf = [0u8; 64];
    let n = tis.transact(&GET_RANDOM_8, &mut buf).unwrap();
    assert_eq!(n, 20);
    i2c.done();
}

#[test]
fn tis_oversized_response_size_aborts() {
    let mut rsp = get_random_response();
    rsp[2..6].copy_from_slice(&0x1_0000u32.to_be_bytes());
    let mut e = locality_request();
    e.extend(send_script(None));
    e.extend(r(0x18, &sts(0x90, 0x1000)));
    e.extend(r(0x18, &sts(0x90, 0x1000)));
    e.extend(r(0x24, &rsp[..10]));
    e.push(w(&[0x18, 0x40])); // abort
    e.extend(access_ours()); // not reset: the error stands
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    );
    let mut buf = [0u8; 64];
    let err = tis.transact(&GET_RANDOM_8, &mut buf).unwrap_err();
    assert_eq!(
        err,
        Error::Protocol(ProtocolError::ResponseSize { size: 0x1_0000 })
    );
    i2c.done();
}

#[test]
fn tis_expect_cleared_early_aborts_and_resends() {
    // Expect out of step is a transfer failure before tpmGo: abort and send the whole command
    // again (Linux's tpm_tis_send_main, TPM_RETRY tries).
    let rsp = get_random_response();
    let mut e = locality_request();
    e.extend(r(0x18, &sts(0xC0, 0x1000)));
    let mut first = vec![0x24];
    first.extend_from_slice(&GET_RANDOM_8[..11]);
    e.push(w(&first));
    e.extend(r(0x18, &sts(0x80, 0x1000))); // Expect clear too early
    e.push(w(&[0x18, 0x40])); // abort
    e.extend(send_script(None));
    e.extend(receive_script(&rsp, None));
    e.push(w(&[0x18, 0x40]));
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    );
    let mut buf = [0u8; 64];
    let n = tis.transact(&GET_RANDOM_8, &mut buf).unwrap();
    assert_eq!(&buf[..n], &rsp[..]);
    i2c.done();
}

#[test]
fn tis_sts_zero_before_startup_times_out_bounded() {
    // A TPM that reports STS = 0 forever: commandReady is requested, polled for TIMEOUT_B,
    // and the command is aborted. The fake clock makes this deterministic.
    let timeouts = Timeouts {
        b_us: 1_000,
        first_command_us: 0,
        poll_us: 100,
        ..Timeouts::default()
    };
    let mut e = locality_request();
    e.extend(r(0x18, &[0; 4]));
    e.push(w(&[0x18, 0x40]));
    // Polls: one read per 101 µs of fake time (100 µs delay + 1 µs per clock reading)
    // until 1000 µs have passed: 11 reads.
    let polls = 11;
    for _ in 0..polls {
        e.extend(r(0x18, &[0; 4]));
    }
    e.push(w(&[0x18, 0x40])); // abort
    e.extend(access_ours());
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    )
    .with_timeouts(timeouts);
    let mut buf = [0u8; 64];
    let err = tis.transact(&GET_RANDOM_8, &mut buf).unwrap_err();
    assert_eq!(err, Error::Timeout(TimeoutKind::CommandReady));
    i2c.done();
}

#[test]
fn tis_burst_count_zero_is_polled() {
    let rsp = get_random_response();
    let mut e = locality_request();
    e.extend(r(0x18, &sts(0xC0, 0))); // ready, burst 0
    e.extend(r(0x18, &sts(0xC0, 0))); // still 0
    e.extend(r(0x18, &sts(0xC0, 4))); // burst 4
    for chunk in GET_RANDOM_8[..11].chunks(4) {
        let mut f = vec![0x24];
        f.extend_from_slice(chunk);
        e.push(w(&f));
        e.extend(r(0x18, &sts(0x88, 4)));
    }
    e.push(w(&[0x24, 0x08]));
    e.extend(r(0x18, &sts(0x80, 4)));
    e.push(w(&[0x18, 0x20]));
    // Response with burst 16: header 10, then body 10 in 16-byte bursts.
    e.extend(r(0x18, &sts(0x90, 16)));
    e.extend(r(0x18, &sts(0x90, 16)));
    e.extend(r(0x24, &rsp[..10]));
    e.extend(r(0x18, &sts(0x90, 16)));
    e.extend(r(0x24, &rsp[10..]));
    e.extend(r(0x18, &sts(0x80, 0)));
    e.push(w(&[0x18, 0x40]));
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    );
    let mut buf = [0u8; 64];
    assert_eq!(tis.transact(&GET_RANDOM_8, &mut buf).unwrap(), 20);
    i2c.done();
}

#[test]
fn tis_over_spi_status_read_glitch_then_ok() {
    // A floating MISO (all ones) trips the must-be-zero mask; the read is repeated.
    let mut spi = SpiMock::new(&[
        SpiTx::transfer_in_place(vec![0x80, 0xD4, 0x00, 0x00], vec![0, 0, 0, 1]),
        SpiTx::read_vec(vec![0xA1]),
        SpiTx::flush(),
        SpiTx::transfer_in_place(vec![0x83, 0xD4, 0x00, 0x14], vec![0, 0, 0, 1]),
        SpiTx::read_vec(vec![0xFF, 0xFF, 0xFF, 0xFF]),
        SpiTx::flush(),
        SpiTx::transfer_in_place(vec![0x83, 0xD4, 0x00, 0x14], vec![0, 0, 0, 1]),
        SpiTx::read_vec(vec![0x97, 0x06, 0x00, 0x30]),
        SpiTx::flush(),
        SpiTx::transfer_in_place(vec![0x83, 0xD4, 0x0F, 0x00], vec![0, 0, 0, 1]),
        SpiTx::read_vec(vec![0xD1, 0x15, 0x1D, 0x00]),
        SpiTx::flush(),
    ]);
    let cs_tx: Vec<PinTx> = (0..4).flat_map(|_| cs_frame()).collect();
    let mut cs = PinMock::new(&cs_tx);
    let mut tis = Tis::new(
        SpiTransport::new(spi.clone(), cs.clone()),
        FakeClock::default(),
    );
    assert_eq!(tis.init().unwrap(), 0x001D_15D1);
    spi.done();
    cs.done();
}

#[test]
fn spi_chip_select_failure_is_reported_and_cs_released() {
    use embedded_hal_mock::eh1::MockError;
    let mut spi = SpiMock::new(&[]);
    let mut cs = PinMock::new(&[
        PinTx::set(State::Low).with_error(MockError::Io(std::io::ErrorKind::Other)),
        PinTx::set(State::High),
    ]);
    let mut t = SpiTransport::new(spi.clone(), cs.clone());
    let mut b = [0u8; 1];
    assert!(matches!(
        t.read(0, Register::Access, &mut b),
        Err(Error::Bus(SpiError::ChipSelect(_)))
    ));
    spi.done();
    cs.done();
}

#[test]
fn tis_locality_request_and_release_over_spi() {
    let mut spi = SpiMock::new(&[
        // ACCESS of locality 2 (0xD42000): valid, not active
        SpiTx::transfer_in_place(vec![0x80, 0xD4, 0x20, 0x00], vec![0, 0, 0, 1]),
        SpiTx::read_vec(vec![0x81]),
        SpiTx::flush(),
        // requestUse
        SpiTx::transfer_in_place(vec![0x00, 0xD4, 0x20, 0x00], vec![0, 0, 0, 1]),
        SpiTx::write_vec(vec![0x02]),
        SpiTx::flush(),
        // granted
        SpiTx::transfer_in_place(vec![0x80, 0xD4, 0x20, 0x00], vec![0, 0, 0, 1]),
        SpiTx::read_vec(vec![0xA1]),
        SpiTx::flush(),
        // release: activeLocality
        SpiTx::transfer_in_place(vec![0x00, 0xD4, 0x20, 0x00], vec![0, 0, 0, 1]),
        SpiTx::write_vec(vec![0x20]),
        SpiTx::flush(),
    ]);
    let cs_tx: Vec<PinTx> = (0..4).flat_map(|_| cs_frame()).collect();
    let mut cs = PinMock::new(&cs_tx);
    let mut tis = Tis::new(
        SpiTransport::new(spi.clone(), cs.clone()),
        FakeClock::default(),
    );
    tis.request_locality(2).unwrap();
    tis.release_locality().unwrap();
    assert_eq!(
        tis.request_locality(5),
        Err(Error::Usage(UsageError::Locality(5)))
    );
    spi.done();
    cs.done();
}

#[test]
fn tis_locality_not_granted_times_out() {
    let timeouts = Timeouts {
        a_us: 300,
        poll_us: 100,
        ..Timeouts::default()
    };
    let mut e = vec![w(&[0x00, 0x00])];
    e.extend(r(0x04, &[0x81]));
    e.push(w(&[0x04, 0x02]));
    for _ in 0..4 {
        e.extend(r(0x04, &[0x81]));
    }
    let mut i2c = I2cMock::new(&e);
    let mut tis = Tis::new(
        I2cTransport::new(i2c.clone(), NoopDelay::new()),
        FakeClock::default(),
    )
    .with_timeouts(timeouts);
    assert_eq!(
        tis.request_locality(0),
        Err(Error::Timeout(TimeoutKind::Locality))
    );
    i2c.done();
}

#[test]
fn command_durations_by_code() {
    // Linux's tpm2_ordinal_duration_index: PCR_Read, FlushContext and Quote are not in its
    // table and get TPM2_DURATION_DEFAULT (120 s).
    assert_eq!(Duration::of(0x17E), Duration::Default); // PCR_Read
    assert_eq!(Duration::of(0x165), Duration::Default); // FlushContext
    assert_eq!(Duration::of(0x144), Duration::Medium); // Startup
    assert_eq!(Duration::of(0x17B), Duration::Long); // GetRandom
    assert_eq!(Duration::of(0x158), Duration::Default); // Quote
    assert_eq!(Duration::of(0x131), Duration::KeyGeneration); // CreatePrimary
    let t = Timeouts::default();
    assert_eq!(t.duration_us(0x153), 300_000_000);
    assert_eq!(t.duration_us(0x165), 120_000_000);
    assert_eq!(t.b_us, 4_000_000);
}

/// A register transport that answers every read with arbitrary bytes: a glitching or
/// floating bus, or a hostile TPM.
struct GarbageRegs {
    bytes: Vec<u8>,
    pos: usize,
}

impl crate::regs::Sealed for GarbageRegs {}

impl RegisterAccess for GarbageRegs {
    type BusError = ();
    fn max_transfer(&self) -> usize {
        64
    }
    fn interface_capability_mbz(&self) -> u32 {
        0x0FFF_F000
    }
    fn read(&mut self, _: u8, _: Register, buf: &mut [u8]) -> Result<(), Error<()>> {
        for b in buf {
            *b = self.bytes.get(self.pos).copied().unwrap_or(0);
            self.pos += 1;
        }
        Ok(())
    }
    fn write(&mut self, _: u8, _: Register, _: &[u8]) -> Result<(), Error<()>> {
        Ok(())
    }
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever the bus answers, a transaction ends (bounded by the fake clock) with a
        /// frame or a typed error, never a panic.
        #[test]
        fn tis_survives_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let timeouts = Timeouts {
                a_us: 2_000,
                b_us: 2_000,
                c_us: 2_000,
                d_us: 2_000,
                medium_us: 2_000,
                long_us: 2_000,
                keygen_us: 2_000,
                default_us: 2_000,
                poll_us: 100,
                first_command_us: 2_000,
            };
            let mut tis = Tis::new(GarbageRegs { bytes, pos: 0 }, FakeClock::default())
                .with_timeouts(timeouts);
            let _ = tis.init();
            let mut buf = [0u8; 256];
            if let Ok(n) = tis.transact(&GET_RANDOM_8, &mut buf) {
                prop_assert!((10..=256).contains(&n));
            }
        }
    }
}
