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

// Whether [addr, addr+len) lies in one of the module's loaded executable segments.
static bool in_text(const module_t *m, uintptr_t addr, size_t len) {
  for (ElfW(Half) i = 0; i < m->phnum; i++) {
    const ElfW(Phdr) *p = &m->phdr[i];
    if (p->p_type != PT_LOAD || !(p->p_flags & PF_X)) continue;
    uintptr_t lo = m->base + p->p_vaddr, hi = lo + p->p_memsz;
    if (addr >= lo && addr + len <= hi) return true;
  }
  return false;
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
static bool resolve(const module_t *m, const char *const *names, void **out, int count) {
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
      if (ELF64_ST_TYPE(sym->st_info) != STT_FUNC || sym->st_shndx == SHN_UNDEF || sym->st_name >= strs->sh_size) continue;
      const char *name = strtab + sym->st_name;
      size_t room = strs->sh_size - sym->st_name;
      if (strnlen(name, room) == room) continue;  // not terminated inside the string table
      for (int i = 0; i < count; i++) {
        if (out[i] || strcmp(name, names[i]) != 0) continue;
        size_t len = sym->st_size < 16 ? (size_t)sym->st_size : 16;
        size_t off;
        uintptr_t addr = m->base + sym->st_value;
        if (len == 0 || !vaddr_to_offset(file, size, eh, sym->st_value, len, &off) || !in_text(m, addr, len) ||
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

napi_status usrsctp_sysctl_init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"get", NULL, sysctl_get, NULL, NULL, NULL, napi_enumerable, NULL},
      {"set", NULL, sysctl_set, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  return export_object(env, exports, "usrsctpSysctl", props, sizeof props / sizeof props[0]);
}
