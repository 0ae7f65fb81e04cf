// The usrsctp settings ("sysctls") of the SCTP stack inside node-datachannel's native addon, for the
// ones libdatachannel's API does not reach (its SctpSettings cover buffers, RTOs, cwnd, SACK delay, but
// not how many packets the receiver takes before it acknowledges). See ../README.md, "usrsctp settings".
//
// node-datachannel links usrsctp statically with hidden visibility: usrsctp_sysctl_{get,set}_sctp_<name>
// are not in its dynamic symbol table, dlsym cannot see them. Its ELF file keeps a full symbol table
// (.symtab), though. This finds the loaded addon with dl_iterate_phdr, reads the two functions' offsets
// from the file's .symtab, checks that the bytes at each address in memory are the function's bytes in
// the file (same build, nothing moved), and only then calls them. Anything unexpected (addon not loaded,
// stripped, symbols absent, bytes differ, not ELF64) makes get return null and set return false: the
// caller goes on with usrsctp's defaults. Linux/glibc (dl_iterate_phdr), 64-bit ELF.
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <node_api.h>

#include "addon_object.h"
#include "usrsctp_sysctl.h"

#define MAX_NAME 64

typedef uint32_t (*sysctl_get_fn)(void);
typedef int (*sysctl_set_fn)(uint32_t);

// The loaded module whose path contains `marker`: its file and load address.
typedef struct {
  const char *marker;
  char path[4096];
  ElfW(Addr) base;
  const ElfW(Phdr) *phdr;
  ElfW(Half) phnum;
  bool found;
} module_t;

static int find_module(struct dl_phdr_info *info, size_t size, void *data) {
  (void)size;
  module_t *m = data;
  if (!info->dlpi_name || !strstr(info->dlpi_name, m->marker)) return 0;
  size_t n = strlen(info->dlpi_name);
  if (n >= sizeof m->path) return 0;
  memcpy(m->path, info->dlpi_name, n + 1);
  m->base = info->dlpi_addr;
  m->phdr = info->dlpi_phdr;
  m->phnum = info->dlpi_phnum;
  m->found = true;
  return 1;
}


// The file offset of virtual address `vaddr` (from a PT_LOAD segment of the file's program headers).
static bool vaddr_to_offset(const uint8_t *file, size_t size, const ElfW(Ehdr) *eh, ElfW(Addr) vaddr, size_t len, size_t *off) {
  if (eh->e_phentsize != sizeof(ElfW(Phdr)) || eh->e_phoff > size || (size - eh->e_phoff) / sizeof(ElfW(Phdr)) < eh->e_phnum) return false;
  const ElfW(Phdr) *ph = (const ElfW(Phdr) *)(file + eh->e_phoff);
  for (ElfW(Half) i = 0; i < eh->e_phnum; i++) {
    if (ph[i].p_type != PT_LOAD) continue;
    if (vaddr >= ph[i].p_vaddr && vaddr + len <= ph[i].p_vaddr + ph[i].p_filesz) {
      size_t o = ph[i].p_offset + (vaddr - ph[i].p_vaddr);
      if (o > size || size - o < len) return false;
      *off = o;
      return true;
    }
  }
  return false;
}

// Looks `names[0..count)` up in the module's .symtab; fills `out` with each function's address in
// memory after checking its first bytes match the file. False if any is missing or does not match.
// Whether [addr, addr+len) lies in one of the module's loaded segments with all of `flags` (PF_X, PF_W…).
static bool in_segment(const module_t *m, uintptr_t addr, size_t len, ElfW(Word) flags) {
  for (ElfW(Half) i = 0; i < m->phnum; i++) {
    const ElfW(Phdr) *p = &m->phdr[i];
    if (p->p_type != PT_LOAD || (p->p_flags & flags) != flags) continue;
    uintptr_t lo = m->base + p->p_vaddr, hi = lo + p->p_memsz;
    if (addr >= lo && addr + len <= hi) return true;
  }
  return false;
}

// Looks `names[0..count)` up in the module's .symtab, each of type kinds[i] (STT_FUNC, or STT_OBJECT of
// exactly sizes[i] bytes in a writable segment); fills `out` with each one's address in memory, after
// checking a function's first bytes match the file. False if any is missing or does not match.
static bool resolve_kinds(const module_t *m, const char *const *names, const int *kinds, const size_t *sizes, void **out, int count);

static bool resolve(const module_t *m, const char *const *names, void **out, int count) {
  int kinds[8];
  if (count > 8) return false;
  for (int i = 0; i < count; i++) kinds[i] = STT_FUNC;
  return resolve_kinds(m, names, kinds, NULL, out, count);
}

static bool resolve_kinds(const module_t *m, const char *const *names, const int *kinds, const size_t *sizes, void **out, int count) {
  int fd = open(m->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  bool ok = false;
  if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof(ElfW(Ehdr))) {
    close(fd);
    return false;
  }
  size_t size = (size_t)st.st_size;
  const uint8_t *file = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (file == MAP_FAILED) return false;
  const ElfW(Ehdr) *eh = (const ElfW(Ehdr) *)file;
  for (int i = 0; i < count; i++) out[i] = NULL;
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
      eh->e_shentsize != sizeof(ElfW(Shdr)) || eh->e_shoff > size ||
      (size - eh->e_shoff) / sizeof(ElfW(Shdr)) < eh->e_shnum)
    goto done;
  const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(file + eh->e_shoff);
  for (ElfW(Half) s = 0; s < eh->e_shnum; s++) {
    if (sh[s].sh_type != SHT_SYMTAB || sh[s].sh_link >= eh->e_shnum) continue;
    const ElfW(Shdr) *strs = &sh[sh[s].sh_link];
    if (sh[s].sh_offset > size || size - sh[s].sh_offset < sh[s].sh_size || strs->sh_offset > size ||
        size - strs->sh_offset < strs->sh_size || sh[s].sh_entsize != sizeof(ElfW(Sym)))
      goto done;
    const ElfW(Sym) *syms = (const ElfW(Sym) *)(file + sh[s].sh_offset);
    const char *strtab = (const char *)(file + strs->sh_offset);
    size_t nsyms = sh[s].sh_size / sizeof(ElfW(Sym));
    for (size_t k = 0; k < nsyms; k++) {
      const ElfW(Sym) *sym = &syms[k];
      int type = ELF64_ST_TYPE(sym->st_info);
      if ((type != STT_FUNC && type != STT_OBJECT) || sym->st_shndx == SHN_UNDEF || sym->st_name >= strs->sh_size) continue;
      const char *name = strtab + sym->st_name;
      size_t room = strs->sh_size - sym->st_name;
      if (strnlen(name, room) == room) continue;  // not terminated inside the string table
      for (int i = 0; i < count; i++) {
        if (out[i] || type != kinds[i] || strcmp(name, names[i]) != 0) continue;
        if (type == STT_OBJECT) {
          uintptr_t addr = m->base + sym->st_value;
          if (sizes == NULL || sym->st_size != sizes[i] || !in_segment(m, addr, sizes[i], PF_R | PF_W)) goto done;
          out[i] = (void *)addr;
          continue;
        }
        size_t len = sym->st_size < 16 ? (size_t)sym->st_size : 16;
        size_t off;
        uintptr_t addr = m->base + sym->st_value;
        if (len == 0 || !vaddr_to_offset(file, size, eh, sym->st_value, len, &off) || !in_segment(m, addr, len, PF_X) ||
            memcmp((const void *)addr, file + off, len) != 0)
          goto done;
        out[i] = (void *)addr;
      }
    }
  }
  ok = true;
  for (int i = 0; i < count; i++) ok = ok && out[i] != NULL;
done:
  munmap((void *)file, size);
  return ok;
}

// Reads a setting's name from the call's arguments: letters, digits and _ (a usrsctp sysctl, e.g.
// "sack_freq_default", "L2_abc_variable"); fills the getter and setter's symbol names. Throws and returns false on bad input.
static bool symbol_names(napi_env env, napi_value arg, char get[], char set[], size_t cap) {
  char name[MAX_NAME + 1];
  size_t n = 0;
  if (napi_get_value_string_utf8(env, arg, name, sizeof name, &n) != napi_ok || n == 0 || n >= MAX_NAME) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "the sysctl name must be a string of 1..63 characters");
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "the sysctl name takes letters, digits and _ only");
      return false;
    }
  }
  snprintf(get, cap, "usrsctp_sysctl_get_sctp_%s", name);
  snprintf(set, cap, "usrsctp_sysctl_set_sctp_%s", name);
  return true;
}

static bool lookup(napi_env env, napi_value marker_arg, napi_value name_arg, sysctl_get_fn *get, sysctl_set_fn *set) {
  char marker[256], get_name[128], set_name[128];
  size_t n = 0;
  if (napi_get_value_string_utf8(env, marker_arg, marker, sizeof marker, &n) != napi_ok || n == 0 || n >= sizeof marker - 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "the module marker must be a string of 1..254 characters");
    return false;
  }
  if (!symbol_names(env, name_arg, get_name, set_name, sizeof get_name)) return false;
  module_t m = {.marker = marker};
  dl_iterate_phdr(find_module, &m);
  const char *names[2] = {get_name, set_name};
  void *addrs[2];
  *get = NULL;
  *set = NULL;
  if (!m.found || !resolve(&m, names, addrs, 2)) return true;
  *get = (sysctl_get_fn)addrs[0];
  *set = (sysctl_set_fn)addrs[1];
  return true;
}

// get(marker, name) -> the value, or null when the module or its symbols are not found.
static napi_value sysctl_get(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "get(marker, name)");
    return NULL;
  }
  sysctl_get_fn get;
  sysctl_set_fn set;
  if (!lookup(env, argv[0], argv[1], &get, &set)) return NULL;
  if (!get) {
    napi_get_null(env, &out);
    return out;
  }
  napi_create_uint32(env, get(), &out);
  return out;
}

// set(marker, name, value) -> true when usrsctp took the value (its setter checks the range and returns 0).
static napi_value sysctl_set(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], out;
  uint32_t value = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 3 ||
      napi_get_value_uint32(env, argv[2], &value) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "set(marker, name, value: uint32)");
    return NULL;
  }
  sysctl_get_fn get;
  sysctl_set_fn set;
  if (!lookup(env, argv[0], argv[1], &get, &set)) return NULL;
  napi_get_boolean(env, set != NULL && set(value) == 0 && get() == value, &out);
  return out;
}

// --- usrsctp's response to loss ---------------------------------------------------------------------
//
// usrsctp's congestion control modules live in one table, `sctp_cc_functions` (4 modules × 14 function
// pointers, struct sctp_cc_functions), which each new association copies from (by its module, 0 =
// RFC 4960's). On a fast retransmit — also of a chunk it then abandons, as a data channel with
// maxRetransmits 0 does — the module halves the congestion window (sctp_cwnd_update_after_fr); on a
// retransmission timeout it drops it to one packet (sctp_cwnd_update_after_timeout). No setting turns
// that off. The first keep() points those two slots of every module using RFC 4960's functions at
// wrappers here that call usrsctp's function unless the window is to be kept (and count timeouts);
// keep(on) switches between the two. Checked first: the table has the expected size and its slots hold
// exactly usrsctp's functions (found by name, code compared with the file) or ours. The table is
// read-only after relocation (RELRO): its page is made writable for the stores and read-only again.
// Associations made after the first call take the wrappers; the switch reaches all of them at once.

#define CC_MODULES 4
#define CC_SLOTS 14
#define CC_SLOT_INITIAL 0
#define CC_SLOT_AFTER_FR 3
#define CC_SLOT_AFTER_TIMEOUT 4

typedef void (*cc_step_fn)(void *, void *);

static cc_step_fn usrsctp_after_fr, usrsctp_after_timeout;  // set once, before the wrappers go in
static bool cc_keep_window;
static uint64_t cc_timeouts;

// Called on every SACK (the module looks for fast-retransmitted chunks itself): not counted.
static void counted_after_fr(void *stcb, void *asoc) {
  if (!__atomic_load_n(&cc_keep_window, __ATOMIC_RELAXED)) usrsctp_after_fr(stcb, asoc);
}

static void counted_after_timeout(void *stcb, void *net) {
  __atomic_add_fetch(&cc_timeouts, 1, __ATOMIC_RELAXED);
  if (!__atomic_load_n(&cc_keep_window, __ATOMIC_RELAXED)) usrsctp_after_timeout(stcb, net);
}

// Finds the table and usrsctp's two functions and checks them; false (nothing touched) on anything unexpected.
static bool cc_table(const char *marker, void ***table, cc_step_fn *fr, cc_step_fn *to, bool *relro) {
  module_t m = {.marker = marker};
  dl_iterate_phdr(find_module, &m);
  if (!m.found) return false;
  static const char *const names[4] = {"sctp_cc_functions", "sctp_set_initial_cc_param", "sctp_cwnd_update_after_fr",
                                       "sctp_cwnd_update_after_timeout"};
  static const int kinds[4] = {STT_OBJECT, STT_FUNC, STT_FUNC, STT_FUNC};
  const size_t sizes[4] = {CC_MODULES * CC_SLOTS * sizeof(void *), 0, 0, 0};
  void *addrs[4];
  if (!resolve_kinds(&m, names, kinds, sizes, addrs, 4)) return false;
  void **t = addrs[0];
  if (t[CC_SLOT_INITIAL] != addrs[1]) return false;  // module 0 is RFC 4960's: the layout is as expected
  void *f0 = t[CC_SLOT_AFTER_FR], *t0 = t[CC_SLOT_AFTER_TIMEOUT];
  if (!((f0 == addrs[2] && t0 == addrs[3]) || (f0 == (void *)counted_after_fr && t0 == (void *)counted_after_timeout))) return false;
  *table = t;
  *fr = (cc_step_fn)addrs[2];
  *to = (cc_step_fn)addrs[3];
  *relro = false;
  uintptr_t lo = (uintptr_t)t, hi = lo + sizes[0];
  for (ElfW(Half) i = 0; i < m.phnum; i++) {
    const ElfW(Phdr) *p = &m.phdr[i];
    if (p->p_type != PT_GNU_RELRO) continue;
    uintptr_t rlo = m.base + p->p_vaddr, rhi = rlo + p->p_memsz;
    if (hi > rlo && lo < rhi) *relro = true;
  }
  return true;
}

// Puts the wrappers into every module's slots that hold usrsctp's RFC 4960 functions.
static bool cc_install(void **table, cc_step_fn fr, cc_step_fn to, bool relro) {
  long page = sysconf(_SC_PAGESIZE);
  if (page <= 0) return false;
  uintptr_t lo = (uintptr_t)table & ~(uintptr_t)(page - 1);
  uintptr_t hi = ((uintptr_t)(table + CC_MODULES * CC_SLOTS) + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
  if (relro && mprotect((void *)lo, hi - lo, PROT_READ | PROT_WRITE) != 0) return false;
  usrsctp_after_fr = fr;
  usrsctp_after_timeout = to;
  for (int k = 0; k < CC_MODULES; k++) {
    void **f = &table[k * CC_SLOTS + CC_SLOT_AFTER_FR], **t = &table[k * CC_SLOTS + CC_SLOT_AFTER_TIMEOUT];
    if (*f == (void *)fr && *t == (void *)to) {
      __atomic_store_n(f, (void *)counted_after_fr, __ATOMIC_RELEASE);
      __atomic_store_n(t, (void *)counted_after_timeout, __ATOMIC_RELEASE);
    }
  }
  if (relro && mprotect((void *)lo, hi - lo, PROT_READ) != 0) return false;
  return table[CC_SLOT_AFTER_FR] == (void *)counted_after_fr;
}

static bool marker_arg(napi_env env, napi_value arg, char marker[], size_t cap) {
  size_t n = 0;
  if (napi_get_value_string_utf8(env, arg, marker, cap, &n) != napi_ok || n == 0 || n >= cap - 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "the module marker must be a string of 1..254 characters");
    return false;
  }
  return true;
}

// state(marker) -> null (not installed, or the table is not as expected), else
// { kept: boolean, timeouts: number } (retransmission timeouts since the wrappers went in).
static napi_value cc_state(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out, v;
  char marker[256];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "state(marker)");
    return NULL;
  }
  if (!marker_arg(env, argv[0], marker, sizeof marker)) return NULL;
  void **table;
  cc_step_fn fr, to;
  bool relro;
  if (!cc_table(marker, &table, &fr, &to, &relro) || table[CC_SLOT_AFTER_FR] != (void *)counted_after_fr) {
    napi_get_null(env, &out);
    return out;
  }
  napi_create_object(env, &out);
  napi_get_boolean(env, __atomic_load_n(&cc_keep_window, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, out, "kept", v);
  napi_create_double(env, (double)__atomic_load_n(&cc_timeouts, __ATOMIC_RELAXED), &v);
  napi_set_named_property(env, out, "timeouts", v);
  return out;
}

// keep(marker, on) -> true when the wrappers are in and keep the window (on) or call usrsctp's (off).
static napi_value cc_keep(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], out;
  char marker[256];
  bool on = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 || napi_get_value_bool(env, argv[1], &on) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "keep(marker, on: boolean)");
    return NULL;
  }
  if (!marker_arg(env, argv[0], marker, sizeof marker)) return NULL;
  void **table;
  cc_step_fn fr, to;
  bool relro;
  bool ok = cc_table(marker, &table, &fr, &to, &relro);
  if (ok) {
    __atomic_store_n(&cc_keep_window, on, __ATOMIC_RELAXED);
    ok = table[CC_SLOT_AFTER_FR] == (void *)counted_after_fr || cc_install(table, fr, to, relro);
  }
  napi_get_boolean(env, ok, &out);
  return out;
}

napi_status usrsctp_sysctl_init(napi_env env, napi_value exports) {
  napi_property_descriptor cc[] = {
      {"state", NULL, cc_state, NULL, NULL, NULL, napi_enumerable, NULL},
      {"keep", NULL, cc_keep, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_status st = export_object(env, exports, "usrsctpLossResponse", cc, sizeof cc / sizeof cc[0]);
  if (st != napi_ok) return st;
  napi_property_descriptor props[] = {
      {"get", NULL, sysctl_get, NULL, NULL, NULL, napi_enumerable, NULL},
      {"set", NULL, sysctl_set, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return export_object(env, exports, "usrsctpSysctl", props, sizeof props / sizeof props[0]);
}
