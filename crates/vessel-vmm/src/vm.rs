//! The builder (the one place that creates KVM objects) and the running VM's lifecycle:
//! [`Vm::setup`] builds everything with the vCPUs parked before their first `KVM_RUN`,
//! [`Vm::start`] also lets them run; `pause`, `resume`, `wait` and `stop` follow.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::GuestMemoryMmap;

use vessel_devices::irq::IrqLine;
use vessel_devices::legacy::{SerialConsole, COM1_IRQ};

use crate::arch::x86_64::{boot, cpuid, layout, mptable, regs};
use crate::config::{SerialSink, VmConfig};
use crate::devices::DeviceManager;
use crate::host;
use crate::vstate::memory;
use crate::vstate::vcpu::{self, ExitReason, VcpuControl};
use crate::VmmError;

/// Kernel command line every guest gets (design.md, "Guest boot"): the i8042 options skip the
/// aux port and mux probes our minimal controller does not model.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 reboot=k panic=-1 pci=off nomodule quiet i8042.noaux i8042.nomux i8042.dumbkbd";

/// A built microVM. Dropping it stops it.
pub struct Vm {
    ctl: Arc<VcpuControl>,
    vcpu_threads: Vec<JoinHandle<()>>,
    pthreads: Vec<libc::pthread_t>,
    devices: Arc<DeviceManager>,
    boot: boot::BootInfo,
    cmdline: String,
    finished: Option<ExitReason>,
    // Field order is drop order: the VM fd goes before the memory it maps.
    _vm_fd: VmFd,
    _memory: GuestMemoryMmap,
}

impl Vm {
    /// Builds the VM from `config` (validated here) with every vCPU parked before its first
    /// `KVM_RUN`. Refuses hosts where guests cannot run unless `allow_unsupported_host` is set.
    pub fn setup(config: VmConfig) -> Result<Vm, VmmError> {
        let t0 = Instant::now();
        config.validate().map_err(VmmError::Config)?;
        if !config.allow_unsupported_host {
            let report = host::probe();
            if !report.verdict.can_run_guests() {
                return Err(VmmError::UnsupportedHost {
                    verdict: report.verdict.to_string(),
                    fix: report.verdict.fix(),
                });
            }
        }
        let kvm = Kvm::new().map_err(VmmError::OpenKvm)?;
        let vm_fd = kvm.create_vm().map_err(VmmError::CreateVm)?;
        let kvm_err = |what: &'static str| move |source| VmmError::SetupVm { what, source };
        vm_fd
            .set_tss_address(layout::KVM_TSS_ADDRESS)
            .map_err(kvm_err("tss address"))?;
        vm_fd
            .set_identity_map_address(layout::KVM_IDENTITY_MAP_ADDRESS)
            .map_err(kvm_err("identity map address"))?;
        vm_fd.create_irq_chip().map_err(kvm_err("irqchip"))?;
        vm_fd
            .create_pit2(kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            })
            .map_err(kvm_err("pit"))?;

        let mem = memory::create(config.memory_bytes()).map_err(VmmError::Memory)?;
        memory::register(&vm_fd, &mem).map_err(VmmError::Memory)?;
        mptable::setup(&mem, layout::MPTABLE_START, config.vcpus).map_err(VmmError::Mptable)?;

        let serial_irq = IrqLine::new().map_err(VmmError::CreateEventFd)?;
        vm_fd
            .register_irqfd(&serial_irq.0, COM1_IRQ)
            .map_err(|source| VmmError::RegisterIrqfd {
                gsi: COM1_IRQ,
                source,
            })?;
        let sink = open_sink(&config.serial)?;
        let devices = DeviceManager::new(SerialConsole::new(serial_irq, sink));
        let device_cmdline = String::new();

        let mut cmdline = format!("{BASE_CMDLINE}{device_cmdline}");
        if !config.extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&config.extra_cmdline);
        }
        let boot_info = boot::load(&mem, &config.kernel, config.initramfs.as_deref(), &cmdline)
            .map_err(VmmError::Boot)?;

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
        let ctl = VcpuControl::new(vcpus.len());
        let mut vm = Vm {
            ctl: ctl.clone(),
            vcpu_threads: Vec::new(),
            pthreads: Vec::new(),
            devices: devices.clone(),
            boot: boot_info,
            cmdline,
            finished: None,
            _vm_fd: vm_fd,
            _memory: mem,
        };
        for (index, v) in vcpus.into_iter().enumerate() {
            let (d, c) = (devices.clone(), ctl.clone());
            let h = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || vcpu::run_loop(v, index as u32, d, c))
                .map_err(|source| VmmError::SpawnThread {
                    name: format!("vcpu{index}"),
                    source,
                })?;
            vm.pthreads.push(h.as_pthread_t());
            vm.vcpu_threads.push(h);
        }
        log::debug!("vm set up in {:?}", t0.elapsed());
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

    /// Kills the VM now (if it still runs) and returns why it ended.
    pub fn stop(&mut self) -> ExitReason {
        self.teardown(ExitReason::Stopped)
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

fn open_sink(sink: &SerialSink) -> Result<Box<dyn Write + Send>, VmmError> {
    Ok(match sink {
        SerialSink::None => Box::new(std::io::sink()),
        SerialSink::Stderr => Box::new(std::io::LineWriter::new(std::io::stderr())),
        SerialSink::File(path) => Box::new(std::io::LineWriter::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| VmmError::OpenSerial {
                    path: PathBuf::from(path),
                    source,
                })?,
        )),
    })
}
