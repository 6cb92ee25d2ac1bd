//! Harness for tests against real parts: a software TPM (swtpm) manufactured per test, a
//! socket transport to it, and bus-level models of a discrete TPM on I2C and SPI that forward
//! to it, so `vouch-tpm`'s transports meet a real TPM 2.0 implementation.
//!
//! - [`swtpm`]: [`swtpm::Swtpm`] manufactures a TPM (EK, EK certificate, local manufacturer
//!   CA) in a temp dir and runs `swtpm socket`; missing tools fail with "run `cargo xtask
//!   setup`".
//! - [`ekcert`]: the TCG profile's ECC P-256 EK certificate for a swtpm (certified by its local
//!   CA), or a TPM without the RSA one.
//! - [`socket`]: [`socket::SwtpmSocket`], `vouch_tpm::Transport` over swtpm's command socket.
//! - [`tis`]: the TIS/FIFO register state machine both bus models share.
//! - [`i2c_model`]: [`i2c_model::I2cTpm`], an `embedded_hal::i2c::I2c` TPM (TCG I2C register
//!   map, behaving like QEMU's `tpm-tis-i2c`), with seeded faults: address NACKs,
//!   corrupted FIFO bytes (checksum recovery), registers glitching to all ones.
//! - [`spi_model`]: [`spi_model::SpiTpm`] + [`spi_model::SpiCs`], an `embedded_hal::spi::SpiBus`
//!   TPM with its chip-select pin (TCG SPI protocol), with seeded wait states.
//! - [`tools`]: tpm2-tools runners (makecredential, checkquote), `certtool` chain checks,
//!   PEM output.
//! - [`qemu`]: boots a board's firmware under QEMU (`qemu/<board>.args`) against a swtpm.
//! - [`clock`]: `vouch_tpm::Clock` and `DelayNs` on the host clock and a simulated one.
//! - [`parts`]: profiles of the real parts the boards name (SLB9670/SLB9673, ST33, NPCT75x)
//!   for the bus models, in simulated time; [`parts::PaddedNv`], an NV index filled with 0xFF.
//! - [`rng`], [`crc`]: the seeded generator behind fault injection; CRC-16/KERMIT.
//!
//! - [`keyload`]: the key provider under load (`cargo xtask keyload`).
//!
//! The binary `vouch-demo` (`cargo xtask demo`) shows what vouch-tpm reads over each path;
//! `vouch-keyload` is `cargo xtask keyload`.
//!
//! Invariant: the harness never touches anything outside each test's temp dir, and never skips:
//! a missing tool is a test failure.

pub mod clock;
pub mod crc;
pub mod ekcert;
pub mod i2c_model;
pub mod keyload;
pub mod parts;
/// The PyKMIP harness of vouch-kmip's tests (a real PyKMIP server per use), for
/// [`keyload`].
#[path = "../../verifier/kmip/tests/common/mod.rs"]
#[allow(
    missing_debug_implementations,
    reason = "a test harness shared by path"
)]
pub mod pykmip;
pub mod qemu;
pub mod rng;
pub mod socket;
pub mod spi_model;
pub mod swtpm;
pub mod tis;
pub mod tools;
pub mod verifier;
