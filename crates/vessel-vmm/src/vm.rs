//! The builder (the one place that creates KVM objects) and the running VM's lifecycle:
//! [`Vm::setup`] builds everything with the vCPUs parked before their first `KVM_RUN`,
//! [`Vm::start`] also lets them run; `pause`, `resume`, `wait` and `stop` follow.

use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use kvm_ioctls::IoEventAddress;
use vessel_devices::event::{EventHandler, Serving};
use vessel_devices::irq::IrqLine;
use vessel_devices::legacy::{SerialConsole, COM1_IRQ};
use vessel_devices::virtio::fs::{Fs, FsError, Lockdown};
use vessel_devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use vessel_devices::virtio::net::{Net, Tap};
use vessel_devices::virtio::vsock::{Vsock, VsockHandle};
use vessel_devices::virtio::{VirtioDevice, VirtioInterrupt};

use crate::arch::x86_64::{boot, cpuid, layout, mptable, regs};
use crate::config::{FsConfig, NetConfig, SerialSink, VmConfig};
use crate::devices::DeviceManager;
use crate::event_loop::{EventLoop, SharedDevice};
use crate::host;
use crate::image_cache::ImageCache;
use crate::limits;
use crate::seccomp::{Filters, ThreadKind};
use crate::vstate::memory;
use crate::vstate::vcpu::{self, ExitReason, VcpuControl};
use crate::VmmError;

/// Kernel command line every guest gets (design.md, "Guest boot"). `no_timer_check` skips the
/// boot-time check that a PIT's interrupt reaches the CPU through the IO-APIC (there is no PIT,
/// and KVM's in-kernel IO-APIC is known good; Kata passes it too). `noreplace-smp` keeps the lock prefixes
/// a one-vCPU guest would otherwise patch out one `text_poke` at a time (thousands, about 100 ms
/// of a lab boot in `VESSEL_VCPU_PROFILE_MS` samples; Documentation/admin-guide/kernel-parameters.txt).
/// The guest kernel has no PS/2 driver: `reboot=k` resets through the i8042 port directly.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 pci=off nomodule quiet no_timer_check noreplace-smp";

/// Waits for a VM's end from any thread; see [`Vm::end_watch`].
#[derive(Clone)]
pub struct EndWatch(Arc<VcpuControl>);

impl EndWatch {
    /// Blocks until some vCPU ended the VM (a guest reset or power-off, an internal error) or
    /// the VM was stopped, and returns why. The VM is not torn down: its owner does that.
    pub fn wait(&self) -> ExitReason {
        self.0.wait_exit()
    }

    /// [`Self::wait`] giving up after `timeout` (`None`: the VM still runs).
    pub fn wait_timeout(&self, timeout: std::time::Duration) -> Option<ExitReason> {
        self.0.wait_exit_timeout(timeout)
    }
}

/// A built microVM. Dropping it stops it.
pub struct Vm {
    ctl: Arc<VcpuControl>,
    vcpu_threads: Vec<JoinHandle<()>>,
    pthreads: Vec<libc::pthread_t>,
    devices: Arc<DeviceManager>,
    event_loop: EventLoop,
    vsock: VsockHandle,
    vsock_uds: Option<PathBuf>,
    /// Every virtio device, in slot order.
    virtio: Vec<SharedDevice>,
    boot: boot::BootInfo,
    cmdline: String,
    finished: Option<ExitReason>,
    // Field order is drop order: the VM fd goes before the memory it maps.
    _vm_fd: Arc<VmFd>,
    _memory: memory::GuestRam,
}

impl Vm {
    /// Builds the VM from `config` (validated here) with every vCPU parked before its first
    /// `KVM_RUN`. Refuses hosts where guests cannot run unless `allow_unsupported_host` is set.
    pub fn setup(config: VmConfig) -> Result<Vm, VmmError> {
        let t0 = Instant::now();
        config.validate().map_err(VmmError::Config)?;
        let filters = Arc::new(Filters::compile().map_err(|source| VmmError::Seccomp {
            thread: "vmm".into(),
            source,
        })?);
        let preopened = crate::preopen::take_kvm();
        if !config.allow_unsupported_host && preopened.is_none() {
            let report = host::probe();
            if !report.verdict.can_run_guests() {
                return Err(VmmError::UnsupportedHost {
                    verdict: report.verdict.to_string(),
                    fix: report.verdict.fix(),
                });
            }
        }
        // Guest memory first, so the kernel and initramfs load (the longest step) runs on its own
        // thread while the VM is built; `loader` joins that thread on every early return.
        let ram = memory::create(config.memory_bytes()).map_err(VmmError::Memory)?;
        let mem = ram.memory().clone();
        let loader = boot::Loader::spawn(
            mem.clone(),
            config.kernel.clone(),
            config.initramfs.clone(),
            config.image_cache.clone().map(ImageCache::new),
        )
        .map_err(|source| VmmError::SpawnThread {
            name: "vmm-loader".into(),
            source,
        })?;
        let kvm = match preopened {
            // SAFETY: the descriptor is an open `/dev/kvm` (crate::preopen) whose ownership
            // passes to `Kvm`, which closes it.
            Some(fd) => unsafe {
                <Kvm as std::os::fd::FromRawFd>::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(
                    fd,
                ))
            },
            None => Kvm::new().map_err(VmmError::OpenKvm)?,
        };
        let vm_fd = Arc::new(kvm.create_vm().map_err(VmmError::CreateVm)?);
        let kvm_err = |what: &'static str| move |source| VmmError::SetupVm { what, source };
        vm_fd
            .set_tss_address(layout::KVM_TSS_ADDRESS)
            .map_err(kvm_err("tss address"))?;
        vm_fd
            .set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
            .map_err(kvm_err("identity map address"))?;
        // The memory slots register on their own thread while the irqchip and
        // devices are built.
        let slots = memory::Registrar::spawn(vm_fd.clone(), mem.clone()).map_err(|source| {
            VmmError::SpawnThread {
                name: "vmm-memslots".into(),
                source,
            }
        })?;
        vm_fd.create_irq_chip().map_err(kvm_err("irqchip"))?;
        // No PIT (KVM_CREATE_PIT2): it cost 4-6 ms of setup here (a kernel thread per VM), and
        // the guest never uses it: with KVM's TSC-deadline LAPIC timer and ARAT, Linux's
        // `use_pit()` (arch/x86/kernel/i8253.c) says no and only writes the PIT's ports once to
        // stop it; without a PIT those land on the empty port bus (reads 0xff), as on QEMU's
        // microvm with pit=off.

        let t_memory = t0.elapsed();
        mptable::setup(&mem, layout::MPTABLE_START, config.vcpus).map_err(VmmError::Mptable)?;

        let serial_irq = IrqLine::new().map_err(VmmError::CreateEventFd)?;
        vm_fd
            .register_irqfd(&serial_irq.0, COM1_IRQ)
            .map_err(|source| VmmError::RegisterIrqfd {
                gsi: COM1_IRQ,
                source,
            })?;
        let sink = open_sink(&config.serial)?;
        let mut devices = DeviceManager::new(SerialConsole::new(serial_irq, sink));

        // The virtio devices, one registration each, in MMIO slots 0, 1, ...: vsock in slot 0,
        // then one virtio-fs device per share, then one virtio-net device per interface.
        let ctl = VcpuControl::new(config.vcpus as usize);
        let mut device_cmdline = String::new();
        let mut virtio = VirtioSlots::new(&vm_fd, &mem, &mut devices, &mut device_cmdline);
        let vsock = vsock_device(&config)?;
        let vsock_handle = vsock.handle();
        virtio.add(vsock)?;
        if !config.fs.is_empty() {
            // The file servers hold a descriptor per inode the guest has looked up.
            limits::raise_nofile_limit_once();
        }
        for (index, share) in config.fs.iter().enumerate() {
            virtio.add(fs_device(index, share, &ctl, &filters)?)?;
        }
        for (index, nic) in config.net.iter().enumerate() {
            virtio.add(net_device(index, nic)?)?;
        }
        let virtio = virtio.devices;
        let served: Vec<SharedDevice> = virtio
            .iter()
            .filter(|d| lock(d).serving() == Serving::EventLoop)
            .cloned()
            .collect();
        let event_loop = EventLoop::spawn(served, Some(Arc::clone(&filters)))?;

        let mut cmdline = format!("{BASE_CMDLINE}{device_cmdline}");
        if !config.extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&config.extra_cmdline);
        }
        let t_devices = t0.elapsed();
        slots.finish().map_err(VmmError::Memory)?;
        let images = loader.finish().map_err(VmmError::Boot)?;
        let boot_info = boot::write_boot_info(&mem, &images, &cmdline).map_err(VmmError::Boot)?;
        let t_boot = t0.elapsed();

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("supported cpuid"))?;
        let mut vcpus = Vec::with_capacity(config.vcpus as usize);
        for index in 0..config.vcpus {
            let v = vm_fd
                .create_vcpu(u64::from(index))
                .map_err(|source| VmmError::CreateVcpu { index, source })?;
            let mut c = supported.clone();
            cpuid::apply_topology(&mut c, index, config.vcpus);
            v.set_cpuid2(&c)
                .map_err(|source| VmmError::SetCpuid { index, source })?;
            regs::setup_fpu_and_msrs(&v).map_err(|source| VmmError::SetRegs { index, source })?;
            regs::setup_lint(&v).map_err(|source| VmmError::SetRegs { index, source })?;
            if index == 0 {
                regs::setup_boot_vcpu(&v, boot_info.entry, boot_info.start_info)
                    .map_err(|source| VmmError::SetRegs { index, source })?;
            }
            vcpus.push(v);
        }

        vcpu::install_kick_handler().map_err(VmmError::InstallSignal)?;
        let devices = Arc::new(devices);
        let mut vm = Vm {
            ctl: ctl.clone(),
            vcpu_threads: Vec::new(),
            pthreads: Vec::new(),
            devices: devices.clone(),
            event_loop,
            vsock: vsock_handle,
            vsock_uds: config.vsock_uds.clone(),
            virtio,
            boot: boot_info,
            cmdline,
            finished: None,
            _vm_fd: vm_fd,
            _memory: ram,
        };
        // Each vCPU installs its seccomp filter on its own thread and says so before it parks;
        // a refusal fails the set-up (dropping `vm` stops the threads already started).
        let (confined_tx, confined) = std::sync::mpsc::channel();
        for (index, v) in vcpus.into_iter().enumerate() {
            let (d, c, f, tx) = (
                devices.clone(),
                ctl.clone(),
                filters.clone(),
                confined_tx.clone(),
            );
            let confine = move || {
                let r = f.install(ThreadKind::Vcpu);
                let ok = r.is_ok();
                let _ = tx.send((index, r));
                ok
            };
            let h = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || vcpu::run_loop(v, index as u32, d, c, confine))
                .map_err(|source| VmmError::SpawnThread {
                    name: format!("vcpu{index}"),
                    source,
                })?;
            vm.pthreads.push(h.as_pthread_t());
            vm.vcpu_threads.push(h);
        }
        drop(confined_tx);
        for _ in 0..config.vcpus {
            match confined.recv() {
                Ok((_, Ok(()))) => {}
                Ok((index, Err(source))) => {
                    return Err(VmmError::Seccomp {
                        thread: format!("vcpu{index}"),
                        source,
                    })
                }
                Err(_) => {
                    return Err(VmmError::SpawnThread {
                        name: "vcpu".into(),
                        source: std::io::Error::other("a vCPU thread ended during set-up"),
                    })
                }
            }
        }
        log::debug!(
            "vm set up in {:?} (VM and guest memory {:?}, devices {:?}, waiting for the memory \
             slots, kernel and initramfs {:?}, vCPUs {:?})",
            t0.elapsed(),
            t_memory,
            t_devices - t_memory,
            t_boot - t_devices,
            t0.elapsed() - t_boot
        );
        Ok(vm)
    }

    /// Builds the VM and starts its vCPUs.
    pub fn start(config: VmConfig) -> Result<Vm, VmmError> {
        let vm = Self::setup(config)?;
        vm.resume()?;
        Ok(vm)
    }

    /// Stops every vCPU at its next exit and returns once all are paused.
    pub fn pause(&self) -> Result<(), VmmError> {
        if self.ctl.pause(&self.pthreads) {
            Ok(())
        } else {
            Err(VmmError::Ended(
                self.ctl.reason().unwrap_or(ExitReason::Stopped),
            ))
        }
    }

    /// Lets every vCPU run (also the first start after [`Vm::setup`]).
    pub fn resume(&self) -> Result<(), VmmError> {
        if self.ctl.resume() {
            Ok(())
        } else {
            Err(VmmError::Ended(
                self.ctl.reason().unwrap_or(ExitReason::Stopped),
            ))
        }
    }

    /// Blocks until the guest ends, then tears the VM down and returns why it ended.
    pub fn wait(&mut self) -> ExitReason {
        let reason = self.ctl.wait_exit();
        self.teardown(reason)
    }

    /// Like [`Vm::wait`] but gives up after `timeout`, returning `None` with the VM still running.
    pub fn wait_timeout(&mut self, timeout: std::time::Duration) -> Option<ExitReason> {
        let reason = self.ctl.wait_exit_timeout(timeout)?;
        Some(self.teardown(reason))
    }

    /// Kills the VM now (if it still runs) and returns why it ended.
    pub fn stop(&mut self) -> ExitReason {
        self.teardown(ExitReason::Stopped)
    }

    /// A handle that waits for the guest to end without holding the `Vm` (Clone + Send), for a
    /// thread that must notice a guest that ends on its own (a reset, a kernel panic).
    pub fn end_watch(&self) -> EndWatch {
        EndWatch(Arc::clone(&self.ctl))
    }

    /// Host-side access to the guest's vsock ports (Clone + Send).
    pub fn vsock(&self) -> VsockHandle {
        self.vsock.clone()
    }

    /// The kernel command line the guest was given.
    pub fn cmdline(&self) -> &str {
        &self.cmdline
    }

    /// Where the kernel and initramfs were loaded.
    pub fn boot_info(&self) -> boot::BootInfo {
        self.boot
    }

    fn teardown(&mut self, reason: ExitReason) -> ExitReason {
        if let Some(r) = &self.finished {
            return r.clone();
        }
        self.ctl.stop(&self.pthreads, reason);
        for h in self.vcpu_threads.drain(..) {
            let _ = h.join();
        }
        self.pthreads.clear();
        self.event_loop.stop();
        for dev in &self.virtio {
            lock(dev).shutdown();
        }
        if let Some(p) = &self.vsock_uds {
            let _ = std::fs::remove_file(p);
        }
        self.devices.flush();
        let r = self.ctl.reason().unwrap_or(ExitReason::Stopped);
        self.finished = Some(r.clone());
        r
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The virtio devices of a VM being built, in MMIO slots `0..` in the order they are added.
struct VirtioSlots<'a> {
    vm_fd: &'a VmFd,
    mem: &'a GuestMemoryMmap,
    bus: &'a mut DeviceManager,
    cmdline: &'a mut String,
    /// Every device added, in slot order.
    devices: Vec<SharedDevice>,
}

impl<'a> VirtioSlots<'a> {
    fn new(
        vm_fd: &'a VmFd,
        mem: &'a GuestMemoryMmap,
        bus: &'a mut DeviceManager,
        cmdline: &'a mut String,
    ) -> Self {
        Self {
            vm_fd,
            mem,
            bus,
            cmdline,
            devices: Vec::new(),
        }
    }

    /// Plugs `device` into the next MMIO slot: its IRQ (`MMIO_FIRST_IRQ + slot`) as an irqfd,
    /// each of its queue eventfds as the KVM ioeventfd of its QueueNotify register (matching the
    /// queue index), its virtio-mmio transport on the MMIO bus, and its `virtio_mmio.device`
    /// declaration on the command line. Whether the device thread serves it is the device's
    /// own [`EventHandler::serving`], read when that thread starts.
    fn add<D: VirtioDevice + EventHandler + 'static>(&mut self, device: D) -> Result<(), VmmError> {
        let slot = self.devices.len() as u32;
        let addr = layout::mmio_slot_addr(slot);
        let irq = layout::MMIO_FIRST_IRQ + slot;
        let line = IrqLine::new().map_err(VmmError::CreateEventFd)?;
        self.vm_fd
            .register_irqfd(&line.0, irq)
            .map_err(|source| VmmError::RegisterIrqfd { gsi: irq, source })?;
        let notify = addr + QUEUE_NOTIFY_OFFSET;
        for (queue, evt) in device.queue_events() {
            self.vm_fd
                .register_ioevent(evt, &IoEventAddress::Mmio(notify), u32::from(queue))
                .map_err(|source| VmmError::RegisterIoevent {
                    addr: notify,
                    source,
                })?;
        }
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            device,
            self.mem.clone(),
            VirtioInterrupt::new(Box::new(line)),
        )));
        self.bus
            .add_mmio(addr, layout::MMIO_SLOT_SIZE, transport.clone());
        self.cmdline.push_str(&mmio_declaration(slot));
        self.devices.push(transport);
        Ok(())
    }
}

/// The kernel command-line declaration of the virtio-mmio device in slot `slot`, with its
/// leading space.
fn mmio_declaration(slot: u32) -> String {
    let addr = layout::mmio_slot_addr(slot);
    let irq = layout::MMIO_FIRST_IRQ + slot;
    format!(" virtio_mmio.device=4K@{addr:#x}:{irq}")
}

/// The virtio-net device of interface `index`: its tap opened by name in this process's
/// network namespace (created when missing; see [`Tap::open`]).
fn net_device(index: usize, nic: &NetConfig) -> Result<Net<Tap>, VmmError> {
    let tap = Tap::open(&nic.tap).map_err(|source| VmmError::OpenTap {
        index,
        tap: nic.tap.clone(),
        source,
    })?;
    Net::new(nic.mac.0, tap).map_err(|source| VmmError::CreateNet {
        index,
        tap: nic.tap.clone(),
        source,
    })
}

/// The virtio-vsock device of `config`, serving its Unix socket if it has one.
fn vsock_device(config: &VmConfig) -> Result<Vsock, VmmError> {
    let mut vsock = Vsock::new(config.vsock_cid).map_err(VmmError::CreateVsock)?;
    if let Some(path) = &config.vsock_uds {
        vsock
            .set_uds_listener(bind_uds(path)?)
            .map_err(|source| VmmError::BindVsockUds {
                path: path.clone(),
                source,
            })?;
    }
    Ok(vsock)
}

/// The virtio-fs device of share `index`. A device whose serving thread dies ends the VM through
/// `ctl` ([`fs_failure`]).
fn fs_device(
    index: usize,
    share: &FsConfig,
    ctl: &Arc<VcpuControl>,
    filters: &Arc<Filters>,
) -> Result<Fs, VmmError> {
    let f = Arc::clone(filters);
    let lockdown: Lockdown = Box::new(move || {
        f.install(ThreadKind::FileServer)
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
    });
    let mut fs = Fs::with_lockdown(&share.tag, &share.shared_dir, lockdown).map_err(|source| {
        VmmError::CreateFs {
            index,
            tag: share.tag.clone(),
            source,
        }
    })?;
    let (ctl, tag) = (Arc::clone(ctl), share.tag.clone());
    fs.on_failure(Box::new(move |e| ctl.fail(fs_failure(&tag, &e))));
    Ok(fs)
}

/// Locks a device, recovering the guard if a thread panicked while holding it.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The exit reason of a VM whose virtio-fs device `tag` lost its serving thread to `e`: the
/// guest's requests on that share would never be answered, so the VM ends rather than hangs.
fn fs_failure(tag: &str, e: &FsError) -> ExitReason {
    ExitReason::DeviceFailed {
        device: format!("virtio-fs {tag}"),
        error: vessel_error::chain(e),
    }
}

/// Binds the vsock Unix socket at `path` (of any length, see [`crate::uds`]), replacing a stale
/// socket file (never another kind of file).
fn bind_uds(path: &std::path::Path) -> Result<std::os::unix::net::UnixListener, VmmError> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            let _ = std::fs::remove_file(path);
        }
    }
    crate::uds::bind(path).map_err(|source| VmmError::BindVsockUds {
        path: path.to_path_buf(),
        source,
    })
}

fn open_sink(sink: &SerialSink) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match sink {
        SerialSink::None => Box::new(std::io::sink()),
        SerialSink::Stderr => Box::new(std::io::LineWriter::new(std::io::stderr())),
        SerialSink::File(path) => Box::new(std::io::LineWriter::new(
            crate::console_log::RotatingLog::open(path, crate::console_log::CONSOLE_LOG_CAP)
                .map_err(|source| VmmError::OpenSerial {
                    path: PathBuf::from(path),
                    source,
                })?,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declarations_of_the_largest_vm_fit_in_the_reserved_command_line() {
        use crate::config::{MAX_FS_DEVICES, MAX_NET_DEVICES};
        let devices = 1 + MAX_FS_DEVICES + MAX_NET_DEVICES;
        let line: String = std::iter::once(BASE_CMDLINE.to_string())
            .chain((0..devices as u32).map(mmio_declaration))
            .collect();
        assert!(
            line.ends_with(" virtio_mmio.device=4K@0xd0010000:21"),
            "{line}"
        );
        assert!(
            line.len() <= layout::BASE_CMDLINE_RESERVED,
            "{} bytes > {}",
            line.len(),
            layout::BASE_CMDLINE_RESERVED
        );
    }

    #[test]
    fn a_tap_that_cannot_be_opened_is_named_with_its_cause() {
        let nic = NetConfig {
            tap: "t".repeat(15),
            mac: vessel_protocol::network::Mac([2, 0, 0, 0, 0, 1]),
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            // As root the tap would be created in this namespace: ask for a bad name instead,
            // which fails before any system call.
            let bad = NetConfig {
                tap: "bad\0name".into(),
                ..nic
            };
            let err = net_device(1, &bad).err().expect("a bad name fails");
            assert_eq!(
                vessel_error::chain(&err),
                "cannot open tap \"bad\\0name\" of net[1]: tap name \"bad\\0name\" is not \
                 1..=15 bytes without NUL"
            );
        } else {
            let err = net_device(0, &nic).err().expect("no CAP_NET_ADMIN");
            assert!(
                vessel_error::chain(&err)
                    .starts_with("cannot open tap \"ttttttttttttttt\" of net[0]: "),
                "{}",
                vessel_error::chain(&err)
            );
        }
    }

    #[test]
    fn a_dead_fs_thread_ends_the_vm_naming_the_device_and_the_causes() {
        let e = FsError::WaitNotify {
            thread: "vessel-fs-vessel".into(),
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        };
        assert_eq!(
            fs_failure("vessel", &e).to_string(),
            "device virtio-fs vessel failed: virtio-fs thread vessel-fs-vessel cannot wait for \
             queue notifications: Bad file descriptor (os error 9)"
        );
    }

    #[test]
    fn the_vsock_socket_binds_past_sun_path_replacing_a_stale_socket_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r".repeat(60)).join("i".repeat(64));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vsock.sock");
        assert!(path.as_os_str().len() > crate::uds::SUN_PATH_LEN);
        drop(bind_uds(&path).unwrap());
        // The first listener's file is left behind, as after a crash: it is replaced.
        let listener = bind_uds(&path).unwrap();
        crate::uds::connect(&path).unwrap();
        drop(listener);

        let file = dir.join("not-a-socket");
        std::fs::write(&file, "keep").unwrap();
        let err = bind_uds(&file).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    }
}
