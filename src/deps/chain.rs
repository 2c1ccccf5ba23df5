//! Load chains: which objects a real process loads, and from where, as
//! ld.so finds them.
//!
//! A library is not judged alone. ld.so resolves an object's DT_NEEDED with
//! the DT_RPATH of every object on the chain that loaded it (when the object
//! has no DT_RUNPATH), and a name that is already loaded in the process (by
//! the name it was asked for, or its DT_SONAME) is not looked up again. So a
//! library with no RPATH of its own, such as an auditwheel-repaired
//! `libxml2`, finds its siblings through the executable's `$ORIGIN/../lib`.
//!
//! A [`Process`] replays that: objects are loaded breadth first from a root
//! (an executable), and further roots can be dlopened into the same process
//! by a caller whose DT_RPATH chain they inherit. What cannot be found
//! becomes a [`Finding`], with the chain that led to it.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use crate::elf::ElfInfo;
use crate::layer::ImagePath;
use crate::triton;

use super::ldso::SearchPath;

/// The objects of an image, as far as a load needs them.
pub(crate) trait Objects {
    /// The dynamic-linking facts of the ELF file at `path`.
    fn elf(&self, path: &ImagePath) -> Option<&ElfInfo>;

    /// The first of `candidates` that is a regular file ld.so would load
    /// into `object`'s process (symlinks followed), if any.
    fn find(&self, candidates: &[ImagePath], object: &ElfInfo) -> Option<ImagePath>;
}

/// A need that does not resolve in a load.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Finding {
    /// Where the load started: a program, or an object dlopened into it.
    pub root: ImagePath,
    /// The object whose need is missing.
    pub object: ImagePath,
    pub need: String,
    /// From the program to `object`, both included.
    pub chain: Vec<ImagePath>,
}

struct Loaded {
    /// The DT_RPATH directories it passes on to what it loads.
    passed_on: Vec<ImagePath>,
    chain: Vec<ImagePath>,
}

/// One process: the objects loaded so far and the names they answer to.
pub(crate) struct Process<'a, O: Objects + ?Sized> {
    objects: &'a O,
    search: &'a SearchPath,
    names: HashMap<String, ImagePath>,
    loaded: HashMap<ImagePath, Loaded>,
    /// Needs left to the host's driver (never in an image).
    pub driver: BTreeSet<String>,
    pub findings: Vec<Finding>,
}

impl<'a, O: Objects + ?Sized> Process<'a, O> {
    pub(crate) fn new(objects: &'a O, search: &'a SearchPath) -> Self {
        Process {
            objects,
            search,
            names: HashMap::new(),
            loaded: HashMap::new(),
            driver: BTreeSet::new(),
            findings: Vec::new(),
        }
    }

    /// The loaded object that answers to `name` (a DT_NEEDED or DT_SONAME).
    pub(crate) fn named(&self, name: &str) -> Option<&ImagePath> {
        self.names.get(name)
    }

    /// Starts a program: `root` and everything it needs.
    pub(crate) fn exec(&mut self, root: &ImagePath) {
        self.load(root, root, Vec::new(), Vec::new());
    }

    /// dlopens `root` by path from `caller` (a loaded object): `root`
    /// inherits the caller's DT_RPATH chain. Without a caller, as a
    /// program of its own.
    pub(crate) fn dlopen(&mut self, root: &ImagePath, caller: Option<&ImagePath>) {
        let (inherited, prefix) = caller
            .and_then(|c| self.loaded.get(c))
            .map(|c| (c.passed_on.clone(), c.chain.clone()))
            .unwrap_or_default();
        self.load(root, root, inherited, prefix);
    }

    fn register(&mut self, path: &ImagePath, asked_as: Option<&str>, info: &ElfInfo) {
        for name in asked_as
            .into_iter()
            .chain(info.soname.as_deref())
            .map(str::to_string)
            .chain([path.display_abs()])
        {
            self.names.entry(name).or_insert_with(|| path.clone());
        }
    }

    fn load(
        &mut self,
        root: &ImagePath,
        object: &ImagePath,
        inherited: Vec<ImagePath>,
        mut chain: Vec<ImagePath>,
    ) {
        let objects = self.objects;
        let Some(info) = objects.elf(object) else {
            return;
        };
        if self.loaded.contains_key(object) {
            return;
        }
        chain.push(object.clone());
        self.register(object, None, info);
        let mut queue = VecDeque::from([(object.clone(), inherited, chain)]);
        while let Some((object, inherited, chain)) = queue.pop_front() {
            let Some(info) = objects.elf(&object) else {
                continue;
            };
            let dirs = self.search.dirs(&object, info, &inherited);
            let passed_on = self.search.passed_on(&object, info, &inherited);
            self.loaded.insert(
                object.clone(),
                Loaded {
                    passed_on: passed_on.clone(),
                    chain: chain.clone(),
                },
            );
            for need in &info.needed {
                if self.names.contains_key(need) {
                    continue;
                }
                match objects.find(&super::candidates(need, &dirs), info) {
                    Some(lib) => {
                        let Some(lib_info) = objects.elf(&lib) else {
                            continue;
                        };
                        let fresh = !self.names.contains_key(&lib.display_abs());
                        self.register(&lib, Some(need), lib_info);
                        if fresh {
                            let mut next = chain.clone();
                            next.push(lib.clone());
                            queue.push_back((lib, passed_on.clone(), next));
                        }
                    }
                    None if triton::is_driver_library(need) => {
                        self.driver.insert(need.clone());
                    }
                    None => self.findings.push(Finding {
                        root: root.clone(),
                        object: object.clone(),
                        need: need.clone(),
                        chain: chain.clone(),
                    }),
                }
            }
        }
    }
}

/// The objects of a Triton installation a load starts from.
#[derive(Debug, Default)]
pub(crate) struct Roots {
    /// Programs, the server first when it is there.
    pub executables: Vec<ImagePath>,
    /// What libtritonserver dlopens: backends, repository agents, caches.
    pub dlopened: Vec<ImagePath>,
}

impl Roots {
    /// Sorts ELF files of the installation (and the entrypoint, when it is
    /// an ELF program) into roots.
    pub(crate) fn find<'p>(
        paths: impl IntoIterator<Item = &'p ImagePath>,
        entrypoint: Option<&ImagePath>,
        elf: impl Fn(&ImagePath) -> Option<&'p ElfInfo>,
    ) -> Roots {
        let mut roots = Roots::default();
        let server = ImagePath::from_static(triton::SERVER_PROGRAM);
        for path in paths {
            let Some(info) = elf(path) else { continue };
            match triton::load_root(path, info.interpreter.is_some()) {
                Some(triton::LoadRoot::Executable) => roots.executables.push(path.clone()),
                Some(triton::LoadRoot::Dlopened) => roots.dlopened.push(path.clone()),
                None => {}
            }
        }
        if let Some(entry) = entrypoint.filter(|e| elf(e).is_some_and(|i| i.interpreter.is_some()))
        {
            roots.executables.push(entry.clone());
        }
        roots.executables.sort();
        roots.executables.dedup();
        roots.dlopened.sort();
        // The server first: components are dlopened into its process.
        if let Some(i) = roots.executables.iter().position(|p| *p == server) {
            let server = roots.executables.remove(i);
            roots.executables.insert(0, server);
        }
        roots
    }
}

/// Every root loaded as Triton loads it: each program in a process of its
/// own, and the components dlopened by libtritonserver into the server's
/// process (each into a process of its own when there is no server).
pub(crate) struct Loads {
    pub findings: Vec<Finding>,
    pub driver: BTreeSet<String>,
    /// Every object some root loads.
    pub reached: HashSet<ImagePath>,
}

pub(crate) fn load_roots<O: Objects + ?Sized>(
    objects: &O,
    search: &SearchPath,
    roots: &Roots,
) -> Loads {
    let server = ImagePath::from_static(triton::SERVER_PROGRAM);
    let mut loads = Loads {
        findings: Vec::new(),
        driver: BTreeSet::new(),
        reached: HashSet::new(),
    };
    let absorb = |process: Process<'_, O>, loads: &mut Loads| {
        loads.findings.extend(process.findings);
        loads.driver.extend(process.driver);
        loads.reached.extend(process.loaded.into_keys());
    };
    let mut dlopened = false;
    for program in &roots.executables {
        let mut process = Process::new(objects, search);
        process.exec(program);
        if *program == server {
            let caller = process.named(triton::SERVER_LIBRARY).cloned();
            for root in &roots.dlopened {
                process.dlopen(root, caller.as_ref().or(Some(program)));
            }
            dlopened = true;
        }
        absorb(process, &mut loads);
    }
    if !dlopened {
        for root in &roots.dlopened {
            let mut process = Process::new(objects, search);
            process.dlopen(root, None);
            absorb(process, &mut loads);
        }
    }
    loads.findings.sort();
    loads.findings.dedup();
    loads
}

/// The needs `object` cannot meet on its own, loaded as a program with no
/// chain above it: for objects no root reaches.
pub(crate) fn alone<O: Objects + ?Sized>(
    objects: &O,
    search: &SearchPath,
    object: &ImagePath,
) -> Vec<Finding> {
    let mut process = Process::new(objects, search);
    process.exec(object);
    process.findings
}

/// Each of `roots` loaded in a process of its own: for objects that
/// something no image shows may load (the ELF files of a kept package).
pub(crate) fn load_each<O: Objects + ?Sized>(
    objects: &O,
    search: &SearchPath,
    roots: &[ImagePath],
) -> Loads {
    let mut loads = Loads {
        findings: Vec::new(),
        driver: BTreeSet::new(),
        reached: HashSet::new(),
    };
    for root in roots {
        let mut process = Process::new(objects, search);
        process.exec(root);
        loads.findings.extend(process.findings);
        loads.driver.extend(process.driver);
        loads.reached.extend(process.loaded.into_keys());
    }
    loads.findings.sort();
    loads.findings.dedup();
    loads
}
