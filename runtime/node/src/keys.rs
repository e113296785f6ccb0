//! `abi-node keys ...`: create, revoke and list gateway API keys.

use std::process::ExitCode;

use abi_gateway::auth::keys::KeysFile;

use crate::cli::KeysCommand;

pub fn main(cmd: KeysCommand) -> ExitCode {
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: KeysCommand) -> Result<(), String> {
    match cmd {
        KeysCommand::Create { role, keys_file } => {
            let role = role.parse()?;
            let mut f = KeysFile::load(&keys_file).map_err(|e| e.to_string())?;
            let key = f.create(role);
            f.save(&keys_file).map_err(|e| e.to_string())?;
            // The key itself on stdout (scripts capture it); guidance on stderr.
            println!("{key}");
            eprintln!(
                "created a {} key in {}; it is shown only now. Running nodes pick it up on SIGHUP or POST /v1/admin/keys/reload.",
                role.as_str(),
                keys_file.display()
            );
            Ok(())
        }
        KeysCommand::Revoke { id, keys_file } => {
            let mut f = KeysFile::load(&keys_file).map_err(|e| e.to_string())?;
            if !f.revoke(&id) {
                return Err(format!("no key with id {id:?} in {}", keys_file.display()));
            }
            f.save(&keys_file).map_err(|e| e.to_string())?;
            eprintln!(
                "revoked {id}; running nodes apply it on SIGHUP or POST /v1/admin/keys/reload"
            );
            Ok(())
        }
        KeysCommand::List { keys_file } => {
            let f = KeysFile::load(&keys_file).map_err(|e| e.to_string())?;
            for k in &f.keys {
                println!(
                    "{}\t{}\t{}",
                    k.id,
                    k.role.as_str(),
                    if k.revoked { "revoked" } else { "active" }
                );
            }
            Ok(())
        }
    }
}
