//! Oracle VM messaging (ovmd) over xenstore `control/oracle-vmapi/`.

pub mod template;
