//! The bus models alone, driven register by register (no vouch-tpm TIS core): proves they
//! behave like the TCG spec and QEMU's `tpm-tis-i2c` before they judge a driver.
// Test helpers panic with what failed, like the #[test] functions clippy.toml exempts.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::cast_possible_truncation
)]

use embedded_hal::digital::OutputPin;
use embedded_hal::i2c::{ErrorKind, I2c, NoAcknowledgeSource, Operation};
use embedded_hal::spi::SpiBus;
use hil_tests::crc::kermit;
use hil_tests::i2c_model::{I2cConfig, I2cTpm, reg};
use hil_tests::socket::SwtpmSocket;
use hil_tests::spi_model::{SpiConfig, SpiCs, SpiTpm};
use hil_tests::swtpm::Swtpm;
use hil_tests::tis::{State, TisConfig};

const STARTUP: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x44, 0, 0];
const GET_RANDOM_16: [u8; 12] = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7B, 0, 16];

fn swtpm() -> Swtpm {
    Swtpm::start().unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------- I2C

fn i2c_read(dev: &mut I2cTpm<SwtpmSocket>, register: u8, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    dev.write_read(0x2E, &[register], &mut buf)
        .expect("register read");
    buf
}

fn i2c_sts(dev: &mut I2cTpm<SwtpmSocket>) -> u32 {
    let b = i2c_read(dev, reg::STS, 4);
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Sends `cmd` by hand over I2C: locality, commandReady, FIFO with Expect checks, CSUM, tpmGo,
/// poll, read header then body. Returns (response, polls).
fn i2c_command(dev: &mut I2cTpm<SwtpmSocket>, cmd: &[u8]) -> (Vec<u8>, usize) {
    dev.write(0x2E, &[reg::STS, 0x40]).expect("commandReady");
    assert_eq!(i2c_sts(dev) & 0x40, 0x40, "commandReady set");
    let (last, head) = cmd.split_last().expect("non-empty");
    let mut w = vec![reg::DATA_FIFO];
    w.extend_from_slice(head);
    dev.write(0x2E, &w).expect("FIFO write");
    assert_eq!(
        i2c_sts(dev) & 0x88,
        0x88,
        "stsValid|Expect before the last byte"
    );
    dev.write(0x2E, &[reg::DATA_FIFO, *last])
        .expect("FIFO write");
    assert_eq!(
        i2c_sts(dev) & 0x88,
        0x80,
        "Expect clear after the last byte"
    );
    let csum = i2c_read(dev, reg::DATA_CSUM, 2);
    assert_eq!(
        u16::from_be_bytes([csum[0], csum[1]]),
        kermit(cmd),
        "command checksum"
    );
    dev.write(0x2E, &[reg::STS, 0x20]).expect("tpmGo");
    let mut polls = 0;
    while i2c_sts(dev) & 0x90 != 0x90 {
        polls += 1;
        assert!(polls < 100, "no dataAvail");
    }
    let header = i2c_read(dev, reg::DATA_FIFO, 10);
    let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]) as usize;
    let burst = (i2c_sts(dev) >> 8) & 0xFFFF;
    assert_eq!(burst as usize, size - 10, "burstCount = bytes left");
    let mut rsp = header;
    rsp.extend(i2c_read(dev, reg::DATA_FIFO, size - 10));
    assert_eq!(
        i2c_sts(dev) & 0x90,
        0x80,
        "dataAvail clear after the last byte"
    );
    let csum = i2c_read(dev, reg::DATA_CSUM, 2);
    assert_eq!(
        u16::from_be_bytes([csum[0], csum[1]]),
        kermit(&rsp),
        "response checksum"
    );
    assert_eq!(
        i2c_read(dev, reg::DATA_FIFO, 2),
        vec![0xFF, 0xFF],
        "past the end reads 0xFF"
    );
    dev.write(0x2E, &[reg::STS, 0x40]).expect("commandReady");
    (rsp, polls)
}

#[test]
fn i2c_model_registers_and_a_command_by_hand() {
    let swtpm = swtpm();
    let cfg = I2cConfig {
        tis: TisConfig {
            max_exec_polls: 4,
            seed: 7,
            ..TisConfig::default()
        },
        ..I2cConfig::default()
    };
    let mut dev = I2cTpm::new(swtpm.connect().expect("connect"), cfg);

    // Identity and capability, as QEMU's tpm-tis-i2c reports them.
    assert_eq!(
        i2c_read(&mut dev, reg::DID_VID, 4),
        vec![0x14, 0x10, 0x01, 0x00]
    );
    assert_eq!(i2c_read(&mut dev, reg::RID, 1), vec![0x01]);
    assert_eq!(
        i2c_read(&mut dev, reg::I2C_INTERFACE_CAPABILITY, 4),
        0x0260_0082u32.to_le_bytes()
    );
    // Reset: no locality; requestUse activates locality 0 at once.
    assert_eq!(i2c_read(&mut dev, reg::ACCESS, 1), vec![0x81]);
    assert_eq!(
        i2c_sts(&mut dev),
        0x03FF_FFFF,
        "STS of an inactive locality: all ones, masked"
    );
    dev.write(0x2E, &[reg::ACCESS, 0x02]).expect("requestUse");
    assert_eq!(i2c_read(&mut dev, reg::ACCESS, 1), vec![0xA1]);
    assert_eq!(i2c_sts(&mut dev), 0x0010_0000, "Idle, burstCount 4096");
    // LOC_SEL selects the locality the registers address.
    dev.write(0x2E, &[reg::LOC_SEL, 0x02]).expect("LOC_SEL");
    assert_eq!(i2c_read(&mut dev, reg::LOC_SEL, 1), vec![0x02]);
    assert_eq!(
        i2c_read(&mut dev, reg::ACCESS, 1),
        vec![0x81],
        "locality 2 not active"
    );
    dev.write(0x2E, &[reg::LOC_SEL, 0x07]).expect("LOC_SEL");
    assert_eq!(
        i2c_read(&mut dev, reg::LOC_SEL, 1),
        vec![0x02],
        "invalid locality ignored"
    );
    dev.write(0x2E, &[reg::LOC_SEL, 0x00]).expect("LOC_SEL");

    // Unknown registers and DEV_ADDR NACK; other addresses NACK; 5th non-FIFO data byte NACKs.
    let nack_data = Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Data));
    assert_eq!(dev.write(0x2E, &[0x10, 0]), nack_data);
    assert_eq!(dev.write(0x2E, &[reg::I2C_DEVICE_ADDRESS, 0x2F]), nack_data);
    assert_eq!(
        dev.write(0x2F, &[reg::ACCESS]),
        Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))
    );
    assert_eq!(
        dev.write(0x2E, &[reg::DATA_CSUM_ENABLE, 1, 0, 0, 0, 0]),
        nack_data
    );
    assert_eq!(
        i2c_read(&mut dev, reg::DATA_CSUM_ENABLE, 1),
        vec![1],
        "first 4 bytes kept at STOP"
    );

    // A write followed by a repeated START is dropped (and recorded as a driver bug).
    let mut b = [0u8; 1];
    dev.transaction(
        0x2E,
        &mut [Operation::Write(&[reg::STS, 0x40]), Operation::Read(&mut b)],
    )
    .expect("write then repeated-start read");
    assert_eq!(
        dev.with_tis(|t| t.state()),
        State::Idle,
        "dropped, so still Idle"
    );
    let provoked = dev.with_tis(|t| t.take_errors());
    assert_eq!(provoked.len(), 1, "{provoked:?}");
    assert!(
        provoked[0].contains("dropped by a repeated START"),
        "{provoked:?}"
    );

    // Startup and GetRandom by hand.
    let (rsp, _) = i2c_command(&mut dev, &STARTUP);
    assert_eq!(rsp, vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
    let mut polls = 0;
    for _ in 0..4 {
        let (rsp, p) = i2c_command(&mut dev, &GET_RANDOM_16);
        assert_eq!(rsp.len(), 28);
        assert_eq!(&rsp[6..12], &[0, 0, 0, 0, 0, 16]);
        polls += p;
    }
    assert!(polls > 0, "the model made the host poll for dataAvail");
    let stats = dev.with_tis(|t| t.stats().clone());
    assert_eq!(stats.command_codes, vec![0x144, 0x17B, 0x17B, 0x17B, 0x17B]);
    assert!(dev.errors().is_empty(), "{:?}", dev.errors());
}

#[test]
fn i2c_model_injects_bounded_address_nacks() {
    let swtpm = swtpm();
    let cfg = I2cConfig {
        nack_probability: 0.5,
        max_consecutive_nacks: 3,
        seed: 42,
        ..I2cConfig::default()
    };
    let mut dev = I2cTpm::new(swtpm.connect().expect("connect"), cfg);
    let mut ok = 0;
    let mut nacks_in_a_row = 0;
    let mut max_in_a_row = 0;
    for _ in 0..200 {
        let mut b = [0u8; 4];
        match dev.write_read(0x2E, &[reg::DID_VID], &mut b) {
            Ok(()) => {
                assert_eq!(b, [0x14, 0x10, 0x01, 0x00]);
                ok += 1;
                nacks_in_a_row = 0;
            }
            Err(e) => {
                assert_eq!(e, ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
                nacks_in_a_row += 1;
                max_in_a_row = max_in_a_row.max(nacks_in_a_row);
            }
        }
    }
    let stats = dev.stats();
    assert_eq!(stats.injected_nacks, 200 - ok);
    assert!(stats.injected_nacks > 40, "{stats:?}");
    assert!(
        max_in_a_row <= 3,
        "at most 3 NACKs in a row, saw {max_in_a_row}"
    );
    // Same seed, same NACK pattern.
    let mut dev2 = I2cTpm::new(
        swtpm.connect().expect("connect"),
        I2cConfig {
            nack_probability: 0.5,
            max_consecutive_nacks: 3,
            seed: 42,
            ..I2cConfig::default()
        },
    );
    let mut ok2 = 0;
    for _ in 0..200 {
        let mut b = [0u8; 4];
        ok2 += usize::from(dev2.write_read(0x2E, &[reg::DID_VID], &mut b).is_ok());
    }
    assert_eq!(ok, ok2, "seeded: reproducible");
}

// ---------------------------------------------------------------- SPI

/// One SPI frame by hand; returns the data phase's MISO bytes and the wait states seen.
fn spi_frame(
    bus: &mut SpiTpm<SwtpmSocket>,
    cs: &mut SpiCs<SwtpmSocket>,
    read: bool,
    locality: u8,
    register: u16,
    data: &[u8],
) -> (Vec<u8>, usize) {
    let len = data.len();
    assert!((1..=64).contains(&len));
    let addr = 0xD4_0000u32 | (u32::from(locality) << 12) | u32::from(register);
    let mut header = [
        (if read { 0x80 } else { 0x00 }) | (len as u8 - 1),
        (addr >> 16) as u8,
        (addr >> 8) as u8,
        addr as u8,
    ];
    cs.set_low().expect("cs");
    bus.transfer_in_place(&mut header).expect("header");
    let mut waits = 0;
    if header[3] & 1 == 0 {
        loop {
            let mut b = [0u8];
            bus.transfer_in_place(&mut b).expect("wait state");
            waits += 1;
            assert!(waits < 100, "wait states never ended");
            if b[0] & 1 == 1 {
                break;
            }
        }
    }
    let mut buf = data.to_vec();
    if read {
        bus.read(&mut buf).expect("read");
    } else {
        bus.write(&buf).expect("write");
    }
    cs.set_high().expect("cs");
    (buf, waits)
}

fn spi_sts(bus: &mut SpiTpm<SwtpmSocket>, cs: &mut SpiCs<SwtpmSocket>) -> u32 {
    let (b, _) = spi_frame(bus, cs, true, 0, 0x18, &[0; 4]);
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn spi_command(bus: &mut SpiTpm<SwtpmSocket>, cs: &mut SpiCs<SwtpmSocket>, cmd: &[u8]) -> Vec<u8> {
    spi_frame(bus, cs, false, 0, 0x18, &[0x40]);
    assert_eq!(spi_sts(bus, cs) & 0x40, 0x40, "commandReady");
    for chunk in cmd.chunks(5) {
        spi_frame(bus, cs, false, 0, 0x24, chunk);
    }
    assert_eq!(spi_sts(bus, cs) & 0x88, 0x80, "Expect clear");
    spi_frame(bus, cs, false, 0, 0x18, &[0x20]);
    while spi_sts(bus, cs) & 0x90 != 0x90 {}
    let (mut rsp, _) = spi_frame(bus, cs, true, 0, 0x24, &[0; 10]);
    let size = u32::from_be_bytes([rsp[2], rsp[3], rsp[4], rsp[5]]) as usize;
    let mut left = size - 10;
    while left > 0 {
        let n = left.min(64);
        rsp.extend(spi_frame(bus, cs, true, 0, 0x24, &vec![0; n]).0);
        left -= n;
    }
    spi_frame(bus, cs, false, 0, 0x18, &[0x40]);
    rsp
}

#[test]
fn spi_model_registers_wait_states_and_a_command_by_hand() {
    let swtpm = swtpm();
    let cfg = SpiConfig {
        wait_probability: 0.5,
        max_wait_states: 4,
        seed: 3,
        ..SpiConfig::default()
    };
    let (mut bus, mut cs) = SpiTpm::new(swtpm.connect().expect("connect"), cfg);

    let (did, _) = spi_frame(&mut bus, &mut cs, true, 0, 0xF00, &[0; 4]);
    assert_eq!(did, vec![0x14, 0x10, 0x01, 0x00]);
    let (cap, _) = spi_frame(&mut bus, &mut cs, true, 0, 0x14, &[0; 4]);
    assert_eq!(cap, 0x3000_0600u32.to_le_bytes());
    assert_eq!(spi_frame(&mut bus, &mut cs, true, 0, 0, &[0]).0, vec![0x81]);
    spi_frame(&mut bus, &mut cs, false, 0, 0, &[0x02]);
    assert_eq!(spi_frame(&mut bus, &mut cs, true, 0, 0, &[0]).0, vec![0xA1]);
    assert_eq!(
        spi_frame(&mut bus, &mut cs, true, 1, 0, &[0]).0,
        vec![0x81],
        "locality 1 idle"
    );
    assert_eq!(
        spi_sts(&mut bus, &mut cs),
        0x0410_0000,
        "TPM 2.0 family, Idle, burst 4096"
    );

    let rsp = spi_command(&mut bus, &mut cs, &STARTUP);
    assert_eq!(rsp, vec![0x80, 0x01, 0, 0, 0, 10, 0, 0, 0, 0]);
    for _ in 0..3 {
        let rsp = spi_command(&mut bus, &mut cs, &GET_RANDOM_16);
        assert_eq!(&rsp[..12], &[0x80, 0x01, 0, 0, 0, 28, 0, 0, 0, 0, 0, 16]);
    }
    let stats = bus.stats();
    assert!(
        stats.frames_with_waits > 5 && stats.wait_states >= stats.frames_with_waits,
        "{stats:?}"
    );
    assert!(stats.frames_with_waits < stats.frames, "{stats:?}");
    assert!(bus.errors().is_empty(), "{:?}", bus.errors());

    // Misuse is recorded: CS raised mid-frame, bytes with CS high, a bad header.
    cs.set_low().expect("cs");
    bus.write(&[0x83, 0xD4, 0x00]).expect("partial header");
    cs.set_high().expect("cs");
    bus.write(&[0x00]).expect("byte with CS high");
    cs.set_low().expect("cs");
    bus.write(&[0x80, 0xD5, 0x00, 0x00]).expect("bad header");
    cs.set_high().expect("cs");
    let errors = bus.errors();
    assert_eq!(errors.len(), 3, "{errors:?}");
}
