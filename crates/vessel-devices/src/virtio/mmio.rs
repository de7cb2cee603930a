//! The virtio-mmio transport: the register layout and device status state machine of virtio 1.2
//! section 4.2.2 (version 2, no legacy), independent of the device behind it.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{VirtioDevice, VirtioInterrupt, VIRTIO_F_VERSION_1};
use crate::bus::MmioDevice;

/// "virt" in little endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// Transport version (2 = virtio 1.x).
pub const MMIO_VERSION: u32 = 2;
/// Vendor ID we report.
pub const VENDOR_ID: u32 = 0x5645_5353; // "VESS"
/// Offset of the QueueNotify register, where KVM ioeventfds are attached.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x50;
/// Offset where device configuration space starts.
pub const CONFIG_OFFSET: u64 = 0x100;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// Guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// Guest has a driver.
    pub const DRIVER: u32 = 2;
    /// Driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation done.
    pub const FEATURES_OK: u32 = 8;
    /// Device hit an error; driver must reset it.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// Driver gave up.
    pub const FAILED: u32 = 128;
}

/// A virtio device with its MMIO register file.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    mem: GuestMemoryMmap,
    interrupt: Arc<VirtioInterrupt>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    config_generation: u32,
    activated: bool,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Wraps `device`; its queues get the device's maximum sizes.
    pub fn new(device: D, mem: GuestMemoryMmap, interrupt: Arc<VirtioInterrupt>) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&m| Queue::new(m).expect("queue max size is a power of two"))
            .collect();
        Self {
            device,
            mem,
            interrupt,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            config_generation: 0,
            activated: false,
        }
    }

    /// The device behind the transport.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device behind the transport, mutably (the event loop drives it through this).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// True once the driver set DRIVER_OK and the device accepted its queues.
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Current Status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue configuration is writable only between FEATURES_OK and DRIVER_OK (4.2.3.2).
    fn queue_config_allowed(&self) -> bool {
        self.status & status::FEATURES_OK != 0 && self.status & status::DRIVER_OK == 0
    }

    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.ack(u32::MAX);
        self.activated = false;
    }

    fn set_status(&mut self, v: u32) {
        use status::*;
        if v == 0 {
            self.reset();
            return;
        }
        // Bits may only be added (2.1.2), except FAILED which the driver may set any time.
        if v & self.status != self.status {
            log::debug!(
                "virtio-mmio: status {:#x} drops bits of {:#x}",
                v,
                self.status
            );
            return;
        }
        let new = v & !self.status;
        if new & FEATURES_OK != 0 {
            let offered = self.device.features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                // Leave FEATURES_OK clear: the driver reads it back and fails (3.1.1 step 6).
                self.status = v & !FEATURES_OK;
                return;
            }
            self.device.ack_features(self.driver_features);
        }
        self.status = v;
        if new & DRIVER_OK != 0 && self.status & FEATURES_OK != 0 {
            let queues: Vec<Queue> = self.queues.iter().map(copy_queue).collect();
            match self
                .device
                .activate(self.mem.clone(), self.interrupt.clone(), queues)
            {
                Ok(()) => self.activated = true,
                Err(e) => {
                    log::warn!(
                        "virtio device {} not activated: {e}",
                        self.device.device_type()
                    );
                    self.status |= DEVICE_NEEDS_RESET;
                    self.interrupt.signal(super::INT_CONFIG);
                }
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            0x000 => MMIO_MAGIC,
            0x004 => MMIO_VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => {
                let f = self.device.features();
                match self.device_features_sel {
                    0 => f as u32,
                    1 => (f >> 32) as u32,
                    _ => 0,
                }
            }
            0x034 => self.queue().map(|q| q.max_size().into()).unwrap_or(0),
            0x044 => self.queue().map(|q| q.ready().into()).unwrap_or(0),
            0x060 => self.interrupt.status(),
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let drv_features_ok =
            self.status & status::DRIVER != 0 && self.status & status::FEATURES_OK == 0;
        let qcfg = self.queue_config_allowed();
        match offset {
            0x014 => self.device_features_sel = v,
            0x020 if drv_features_ok => match self.driver_features_sel {
                0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                1 => {
                    self.driver_features =
                        (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                }
                _ => {}
            },
            0x024 => self.driver_features_sel = v,
            0x030 => self.queue_sel = v,
            0x038 if qcfg => {
                if let Some(q) = self.queue() {
                    q.set_size(v as u16);
                }
            }
            0x044 if qcfg => {
                if let Some(q) = self.queue() {
                    q.set_ready(v == 1);
                }
            }
            0x050 => {
                if self.activated && v < self.queues.len() as u32 {
                    self.device.queue_notify(v as u16);
                }
            }
            0x064 => self.interrupt.ack(v),
            0x070 => self.set_status(v),
            0x080 if qcfg => self
                .queue()
                .map_or((), |q| q.set_desc_table_address(Some(v), None)),
            0x084 if qcfg => self
                .queue()
                .map_or((), |q| q.set_desc_table_address(None, Some(v))),
            0x090 if qcfg => self
                .queue()
                .map_or((), |q| q.set_avail_ring_address(Some(v), None)),
            0x094 if qcfg => self
                .queue()
                .map_or((), |q| q.set_avail_ring_address(None, Some(v))),
            0x0a0 if qcfg => self
                .queue()
                .map_or((), |q| q.set_used_ring_address(Some(v), None)),
            0x0a4 if qcfg => self
                .queue()
                .map_or((), |q| q.set_used_ring_address(None, Some(v))),
            _ => log::debug!("virtio-mmio: ignored write {v:#x} at {offset:#x}"),
        }
    }
}

/// A queue with the same configuration as `q` (virtio-queue's `Queue` is not `Clone`): the
/// device gets its own copy, the transport keeps its copy for register reads.
fn copy_queue(q: &Queue) -> Queue {
    let mut c = Queue::new(q.max_size()).expect("max size was valid for the original");
    c.set_size(q.size());
    let split = |a: u64| (Some(a as u32), Some((a >> 32) as u32));
    let (lo, hi) = split(q.desc_table());
    c.set_desc_table_address(lo, hi);
    let (lo, hi) = split(q.avail_ring());
    c.set_avail_ring_address(lo, hi);
    let (lo, hi) = split(q.used_ring());
    c.set_used_ring_address(lo, hi);
    c.set_ready(q.ready());
    c
}

impl<D: VirtioDevice> MmioDevice for MmioTransport<D> {
    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.read_config(offset - CONFIG_OFFSET, data);
        } else if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_OFFSET {
            self.device.write_config(offset - CONFIG_OFFSET, data);
        } else if data.len() == 4 && offset % 4 == 0 {
            let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.write_reg(offset, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::IrqLine;
    use std::sync::Mutex;
    use vm_memory::GuestAddress;

    /// A device that records what the transport did to it.
    #[derive(Default)]
    struct Probe {
        acked: u64,
        activated_with: Option<Vec<(u16, bool)>>,
        resets: u32,
        notified: Vec<u16>,
        config: [u8; 8],
    }
    struct Dev(Arc<Mutex<Probe>>);
    impl VirtioDevice for Dev {
        fn device_type(&self) -> u32 {
            19
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[256, 256]
        }
        fn features(&self) -> u64 {
            VIRTIO_F_VERSION_1 | 1
        }
        fn ack_features(&mut self, f: u64) {
            self.0.lock().unwrap().acked = f;
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            let c = self.0.lock().unwrap().config;
            for (i, b) in data.iter_mut().enumerate() {
                *b = *c.get(offset as usize + i).unwrap_or(&0);
            }
        }
        fn write_config(&mut self, _: u64, _: &[u8]) {}
        fn activate(
            &mut self,
            _mem: GuestMemoryMmap,
            _irq: Arc<VirtioInterrupt>,
            queues: Vec<Queue>,
        ) -> Result<(), super::super::VirtioError> {
            self.0.lock().unwrap().activated_with =
                Some(queues.iter().map(|q| (q.size(), q.ready())).collect());
            Ok(())
        }
        fn reset(&mut self) {
            self.0.lock().unwrap().resets += 1;
        }
        fn queue_notify(&mut self, i: u16) {
            self.0.lock().unwrap().notified.push(i);
        }
    }

    fn setup() -> (MmioTransport<Dev>, Arc<Mutex<Probe>>) {
        let p = Arc::new(Mutex::new(Probe {
            config: [3, 0, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        }));
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let irq = VirtioInterrupt::new(Box::new(IrqLine::new().unwrap()));
        (MmioTransport::new(Dev(p.clone()), mem, irq), p)
    }

    fn r(t: &mut MmioTransport<Dev>, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.mmio_read(off, &mut b);
        u32::from_le_bytes(b)
    }
    fn w(t: &mut MmioTransport<Dev>, off: u64, v: u32) {
        t.mmio_write(off, &v.to_le_bytes());
    }

    #[test]
    fn identification_registers_and_config_space() {
        let (mut t, _) = setup();
        assert_eq!(r(&mut t, 0), MMIO_MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 8), 19);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "high feature word has VERSION_1");
        w(&mut t, 0x14, 0);
        assert_eq!(r(&mut t, 0x10), 1);
        assert_eq!(r(&mut t, 0x100), 3, "guest_cid low word from config space");
        let mut odd = [0xaa; 2];
        t.mmio_read(0x2, &mut odd);
        assert_eq!(odd, [0, 0], "sub-word register reads are zero");
    }

    #[test]
    fn full_driver_handshake_activates_with_the_configured_queues() {
        let (mut t, p) = setup();
        w(&mut t, 0x70, status::ACKNOWLEDGE);
        w(&mut t, 0x70, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1); // VERSION_1
        w(&mut t, 0x24, 0);
        w(&mut t, 0x20, 1);
        w(&mut t, 0x70, 0xb); // + FEATURES_OK
        assert_eq!(r(&mut t, 0x70) & status::FEATURES_OK, status::FEATURES_OK);
        assert_eq!(p.lock().unwrap().acked, VIRTIO_F_VERSION_1 | 1);
        // Queue 0: 128 entries, ready; queue 1 left unready.
        w(&mut t, 0x30, 0);
        assert_eq!(r(&mut t, 0x34), 256);
        w(&mut t, 0x38, 128);
        w(&mut t, 0x80, 0x1000);
        w(&mut t, 0x90, 0x2000);
        w(&mut t, 0xa0, 0x3000);
        w(&mut t, 0x44, 1);
        assert_eq!(r(&mut t, 0x44), 1);
        w(&mut t, 0x30, 7);
        assert_eq!(r(&mut t, 0x34), 0, "nonexistent queue has max 0");
        w(&mut t, 0x70, 0xf); // + DRIVER_OK
        assert!(t.is_activated());
        assert_eq!(
            p.lock().unwrap().activated_with,
            Some(vec![(128, true), (256, false)])
        );
        // Queue config is frozen after DRIVER_OK.
        w(&mut t, 0x30, 0);
        w(&mut t, 0x38, 64);
        w(&mut t, 0x50, 1);
        w(&mut t, 0x50, 9);
        assert_eq!(p.lock().unwrap().notified, vec![1]);
        // Reset.
        w(&mut t, 0x70, 0);
        assert!(!t.is_activated());
        assert_eq!(r(&mut t, 0x70), 0);
        assert_eq!(p.lock().unwrap().resets, 1);
        assert_eq!(r(&mut t, 0x44), 0);
    }

    #[test]
    fn features_without_version_1_or_unknown_bits_are_refused() {
        let (mut t, p) = setup();
        w(&mut t, 0x70, 3);
        w(&mut t, 0x20, 1); // no VERSION_1
        w(&mut t, 0x70, 0xb);
        assert_eq!(r(&mut t, 0x70) & status::FEATURES_OK, 0);
        w(&mut t, 0x24, 1);
        w(&mut t, 0x20, 1 | 2); // VERSION_1 plus an unoffered bit 33
        w(&mut t, 0x70, 0xb);
        assert_eq!(r(&mut t, 0x70) & status::FEATURES_OK, 0);
        assert_eq!(p.lock().unwrap().acked, 0);
        // Queue writes before FEATURES_OK are ignored; DRIVER_OK without it activates nothing.
        w(&mut t, 0x38, 16);
        w(&mut t, 0x70, 0x7);
        assert!(!t.is_activated());
        // Clearing bits is refused.
        let before = r(&mut t, 0x70);
        w(&mut t, 0x70, 1);
        assert_eq!(r(&mut t, 0x70), before);
    }

    #[test]
    fn interrupt_status_is_acked_bitwise() {
        let (mut t, _) = setup();
        t.interrupt.signal(super::super::INT_USED_RING);
        t.interrupt.signal(super::super::INT_CONFIG);
        assert_eq!(r(&mut t, 0x60), 3);
        w(&mut t, 0x64, 1);
        assert_eq!(r(&mut t, 0x60), 2);
    }
}
