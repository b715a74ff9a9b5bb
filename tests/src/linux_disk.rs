//! A real Linux station's disk, built from Debian packages and cached:
//! Debian 12's kernel, an initramfs-tools initramfs with open-iscsi, a
//! minimal Debian root whose init is a small shell script, and GRUB 2
//! (i386-pc) installed on the disk itself, as a deployment does. iPXE
//! `sanboot`s the disk, GRUB reads its kernel and initrd through iPXE's
//! INT 13h, and the initramfs logs in to the target again with the keys
//! baked into `grub.cfg` (Debian's `iscsi_target_name=` family).
//!
//! Built without loop devices or mounts: `mmdebstrap` makes the root in a
//! directory, `mkfs.ext4 -d` turns it into a partition image, `sfdisk`
//! writes the partition table into the disk file, and GRUB's `core.img`
//! (from `grub-mkimage`, run inside the root) goes to sector 1 with the
//! first 440 bytes of `boot.img` in the MBR.
//!
//! The station's init counts its boots in `/var/lib/sanboot/boots`, prints
//! `SANBOOT-LINUX boot N`, remounts the root read-only (so a station that
//! is simply killed leaves a clean file system) and starts a shell on the
//! serial console. Given `sanboot.install=IP,IQN[,USER,SECRET]` it first
//! runs the seed's install step with the kernel's initiator (open-iscsi):
//! discovery, login with CRC32C digests (and CHAP), `iscsiadm -m session
//! -P3`, `mkfs.ext4`, a written and read-back checksum, `e2fsck -n`,
//! logout; and prints `SANBOOT-INSTALL written … read … fsck …`.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};

/// Bump when the recipe below changes, so cached images are rebuilt.
const RECIPE: u32 = 4;

/// Packages in the root besides mmdebstrap's minbase.
const PACKAGES: &[&str] = &[
    "linux-image-amd64",
    "initramfs-tools",
    "open-iscsi",
    "busybox",
    "grub-pc-bin",
];

/// The line the station's init prints once its root is on the target.
pub const MARKER: &str = "SANBOOT-LINUX boot";

/// Where the initramfs finds its disk (written into `grub.cfg`).
#[derive(Debug, Clone)]
pub struct Spec {
    /// The portal address.
    pub server: String,
    /// The target the root lives on (LUN 0).
    pub target_iqn: String,
    /// The name the initramfs logs in with.
    pub initiator_iqn: String,
}

impl Spec {
    /// The e2e lab's server and target.
    pub fn lab() -> Spec {
        Spec {
            server: crate::SERVER.to_string(),
            target_iqn: crate::TARGET_IQN.to_string(),
            initiator_iqn: "iqn.2024-01.test.e2e:linux-station".to_string(),
        }
    }

    fn key(&self) -> String {
        format!(
            "recipe {RECIPE}\npackages {}\nserver {}\ntarget {}\ninitiator {}\n",
            PACKAGES.join(","),
            self.server,
            self.target_iqn,
            self.initiator_iqn
        )
    }
}

/// The built disk, and the kernel and initrd on it as separate files for
/// the `kernel` boot form (TFTP).
#[derive(Debug, Clone)]
pub struct LinuxDisk {
    /// The whole disk: MBR, GRUB, one ext4 partition labelled `sanroot`.
    pub image: PathBuf,
    /// Debian's kernel (`/boot/vmlinuz-*`).
    pub kernel: PathBuf,
    /// Its initramfs-tools initrd, with open-iscsi.
    pub initrd: PathBuf,
}

/// The cached disk for `spec`, building it (as root, a few minutes and
/// ~200 MB of downloads) when it is missing or was built for another spec
/// or recipe.
pub fn cached(spec: &Spec) -> Result<LinuxDisk> {
    // The tests of one binary run as threads: one builds, the others wait
    // and then find the cache.
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = crate::target_dir().join("linux-disk");
    let disk = LinuxDisk {
        image: dir.join("disk.img"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
    };
    let image = &disk.image;
    let stamp = dir.join("disk.key");
    let built = [&disk.image, &disk.kernel, &disk.initrd]
        .iter()
        .all(|p| p.is_file());
    if built && fs::read_to_string(&stamp).ok().as_deref() == Some(&spec.key()) {
        return Ok(disk);
    }
    crate::require(&["mmdebstrap", "mkfs.ext4", "sfdisk"])?;
    fs::create_dir_all(&dir)?;
    let _ = fs::remove_file(&stamp);
    let start = Instant::now();
    build(spec, &dir, image)?;
    fs::write(&stamp, spec.key())?;
    println!(
        "linux disk: built {} in {:.0} s",
        image.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(disk)
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    ensure!(status.success(), "{shown} failed: {status}");
    Ok(())
}

/// The machine's own Debian sources, so the root comes from the mirror
/// apt already uses here (mmdebstrap pastes an existing file as is).
fn sources() -> Vec<PathBuf> {
    let deb822 = PathBuf::from("/etc/apt/sources.list.d/debian.sources");
    let classic = PathBuf::from("/etc/apt/sources.list");
    if deb822.is_file() {
        vec![deb822]
    } else if classic.is_file() {
        vec![classic]
    } else {
        Vec::new()
    }
}

fn build(spec: &Spec, dir: &Path, image: &Path) -> Result<()> {
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("cannot remove {}", root.display()))?;
    }
    // Everything that must happen inside the root runs as mmdebstrap's
    // customize hooks, with /proc and /dev mounted for them.
    let hooks = [
        // open-iscsi's initramfs hook includes iSCSI only when this exists.
        r#"mkdir -p "$1/etc/iscsi" && touch "$1/etc/iscsi/iscsi.initramfs""#,
        r#"chroot "$1" update-initramfs -u -k all"#,
        r#"chroot "$1" grub-mkimage -O i386-pc -o /boot/core.img -p "(hd0,msdos1)/boot/grub" biosdisk part_msdos ext2 linux normal configfile serial terminal echo test"#,
    ];
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--mode=root", "--quiet"])
        .arg(format!("--include={}", PACKAGES.join(",")));
    for h in hooks {
        cmd.arg(format!("--customize-hook={h}"));
    }
    cmd.arg("bookworm").arg(&root).args(sources());
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    run(&mut cmd)?;

    let boot = root.join("boot");
    let kernel = find(&boot, "vmlinuz-")?;
    let initrd = find(&boot, "initrd.img-")?;
    fs::copy(boot.join(&kernel), dir.join("vmlinuz"))?;
    fs::copy(boot.join(&initrd), dir.join("initrd.img"))?;
    fs::create_dir_all(boot.join("grub"))?;
    fs::write(boot.join("grub/grub.cfg"), grub_cfg(spec, &kernel, &initrd))?;
    let init = root.join("sbin").join("sanboot-init");
    fs::write(&init, INIT)?;
    run(Command::new("chmod").args(["755"]).arg(&init))?;
    fs::create_dir_all(root.join("var/lib/sanboot"))?;
    fs::write(root.join("etc/hostname"), "sanboot-station\n")?;
    fs::write(
        root.join("etc/fstab"),
        "LABEL=sanroot / ext4 defaults 0 1\n",
    )?;

    // GRUB's pieces live outside the file system; the initramfs already
    // holds every module the boot needs, and the shell needs none.
    let core = dir.join("core.img");
    fs::rename(boot.join("core.img"), &core)?;
    let boot_img = dir.join("boot.img");
    fs::copy(root.join("usr/lib/grub/i386-pc/boot.img"), &boot_img)?;
    for bulky in [
        "lib/modules",
        "usr/lib/grub",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "var/cache/apt",
        "var/lib/apt/lists",
    ] {
        let p = root.join(bulky);
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
    }

    // The partition: the root's size plus room, in whole MiB.
    let used = dir_size(&root)?;
    let part_mib = (used * 13 / 10) / (1 << 20) + 64;
    let part = dir.join("root.ext4");
    let _ = fs::remove_file(&part);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "sanroot", "-d"])
        .arg(&root)
        .arg(&part)
        .arg(format!("{part_mib}M")))?;

    // The disk: 1 MiB for the MBR and GRUB's core.img, then the partition.
    let tmp = dir.join("disk.img.tmp");
    let _ = fs::remove_file(&tmp);
    {
        let mut disk = fs::File::create(&tmp)?;
        disk.set_len((1 + part_mib) << 20)?;
        disk.seek(SeekFrom::Start(1 << 20))?;
        std::io::copy(&mut fs::File::open(&part)?, &mut disk)?;
    }
    let mut sfdisk = Command::new("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&tmp)
        .stdin(Stdio::piped())
        .spawn()
        .context("cannot run sfdisk")?;
    if let Some(mut stdin) = sfdisk.stdin.take() {
        writeln!(
            stdin,
            "label: dos\nstart=2048, size={}, type=83, bootable",
            part_mib << 11
        )?;
    }
    ensure!(
        sfdisk.wait()?.success(),
        "sfdisk failed on {}",
        tmp.display()
    );

    let core_bytes = fs::read(&core)?;
    // core.img must fit before the partition (sectors 1..2047).
    ensure!(
        core_bytes.len() <= 2047 * 512,
        "core.img is {} bytes, more than the 1 MiB gap",
        core_bytes.len()
    );
    let boot_bytes = fs::read(&boot_img)?;
    let code = boot_bytes
        .get(..440)
        .context("boot.img is shorter than 440 bytes")?;
    {
        let mut disk = fs::OpenOptions::new().write(true).open(&tmp)?;
        // Only the boot code: bytes 440.. hold the partition table.
        disk.write_all(code)?;
        disk.seek(SeekFrom::Start(512))?;
        disk.write_all(&core_bytes)?;
    }
    fs::rename(&tmp, image)?;
    let _ = fs::remove_file(&part);
    fs::remove_dir_all(&root)?;
    Ok(())
}

/// The one file in `dir` whose name starts with `prefix`.
fn find(dir: &Path, prefix: &str) -> Result<String> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no {prefix}* in {}", dir.display()),
        many => bail!("several {prefix}* in {}: {many:?}", dir.display()),
    }
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.path().symlink_metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())? + 4096
        } else {
            meta.len().max(4096)
        };
    }
    Ok(total)
}

/// GRUB on the serial console, straight into the kernel with Debian's
/// open-iscsi keys (initramfs-tools' `scripts/local-top/iscsi`).
fn grub_cfg(spec: &Spec, kernel: &str, initrd: &str) -> String {
    format!(
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n\
         set timeout=0\n\
         menuentry \"Debian on sanboot\" {{\n\
         \x20 linux /boot/{kernel} root=LABEL=sanroot ro console=ttyS0,115200 init=/sbin/sanboot-init \
         ip=dhcp iscsi_target_name={target} iscsi_target_ip={server} iscsi_initiator={initiator}\n\
         \x20 initrd /boot/{initrd}\n}}\n",
        target = spec.target_iqn,
        server = spec.server,
        initiator = spec.initiator_iqn,
    )
}

const INIT: &str = r#"#!/bin/sh
# The station's init: count this boot on the iSCSI root, say so, leave the
# root read-only and clean; with sanboot.install=IP,IQN[,USER,SECRET] on the
# command line, run the seed's install step against that target with the
# kernel's initiator; then a shell on the console.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -o remount,rw /
n=$(cat /var/lib/sanboot/boots 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" > /var/lib/sanboot/boots
# sanboot.mark=X on the command line leaves a file mark-X on the root, and
# every mark the root holds is listed: which station wrote to this disk.
for w in $(cat /proc/cmdline); do
    case "$w" in sanboot.mark=*) : > "/var/lib/sanboot/mark-${w#sanboot.mark=}" ;; esac
done
marks=$(cd /var/lib/sanboot && for m in mark-*; do [ -e "$m" ] && printf ' %s' "${m#mark-}"; done)
sync
mount -o remount,ro /
echo "SANBOOT-LINUX marks:$marks."
echo "SANBOOT-LINUX boot $n: root $(grep ' / ' /proc/mounts | head -n 1)"
install=
for w in $(cat /proc/cmdline); do
    case "$w" in sanboot.install=*) install=${w#sanboot.install=} ;; esac
done
if [ -n "$install" ]; then
    IFS=, read -r ip iqn user secret <<EOF
$install
EOF
    # iscsiadm keeps its records under /etc/iscsi: give it a writable copy.
    mount -t tmpfs tmpfs /run
    mkdir -p /run/lock /run/etc-iscsi /run/mnt
    cp -a /etc/iscsi/. /run/etc-iscsi/
    mount --bind /run/etc-iscsi /etc/iscsi
    echo "InitiatorName=iqn.2024-01.test.e2e:installer" > /etc/iscsi/initiatorname.iscsi
    iscsid
    sleep 1
    node="iscsiadm -m node -T $iqn -p $ip"
    iscsiadm -m discovery -t st -p "$ip" || echo "SANBOOT-INSTALL FAILED discovery"
    $node -o update -n 'node.conn[0].iscsi.HeaderDigest' -v CRC32C
    $node -o update -n 'node.conn[0].iscsi.DataDigest' -v CRC32C
    if [ -n "$user" ]; then
        $node -o update -n node.session.auth.authmethod -v CHAP
        $node -o update -n node.session.auth.username -v "$user"
        $node -o update -n node.session.auth.password -v "$secret"
    fi
    $node -l || echo "SANBOOT-INSTALL FAILED login"
    iscsiadm -m session -P3
    i=0
    while [ ! -b /dev/sdb ] && [ $i -lt 50 ]; do sleep 0.2; i=$((i + 1)); done
    mkfs.ext4 -q -F /dev/sdb || echo "SANBOOT-INSTALL FAILED mkfs"
    mount /dev/sdb /run/mnt
    dd if=/dev/urandom of=/run/mnt/data bs=1M count=8 2>/dev/null
    written=$(sha256sum < /run/mnt/data)
    umount /run/mnt
    echo 3 > /proc/sys/vm/drop_caches
    mount -o ro /dev/sdb /run/mnt
    read_back=$(sha256sum < /run/mnt/data)
    umount /run/mnt
    e2fsck -n /dev/sdb > /run/fsck.log 2>&1 && fsck=clean || fsck="not clean: $(cat /run/fsck.log)"
    $node -u
    echo "SANBOOT-INSTALL written ${written%% *} read ${read_back%% *} fsck $fsck"
fi
exec busybox setsid busybox cttyhack /bin/sh
"#;
