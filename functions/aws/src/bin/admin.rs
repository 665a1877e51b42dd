//! `runconvert-aws`: the deployment's administration from a workstation, against its
//! DynamoDB table (what `runconvert keys` and `runconvert credits` are for the embedded
//! server). Uses the usual AWS credentials and region; the table is `TABLE_NAME` or
//! `--table` (the stack's `TableName` output).
//!
//! ```text
//! runconvert-aws keys create --name NAME [--rate-limit N] [--credits N]
//!     prints the new key (only it) on stdout, the user's id on stderr
//! runconvert-aws credits add --user ID --amount N
//!     prints the new balance
//! ```

use runconvert_aws::dynamo::DynamoStore;
use std::collections::HashMap;
use std::process::ExitCode;

const USAGE: &str = "usage:
  runconvert-aws [--table TABLE] keys create --name NAME [--rate-limit N] [--credits N]
  runconvert-aws [--table TABLE] credits add --user ID --amount N";

/// The words of the command and its `--flag value` pairs.
fn parse(args: &[String]) -> Result<(Vec<&str>, HashMap<&str, &str>), String> {
    let mut words = Vec::new();
    let mut flags = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(flag) = a.strip_prefix("--") {
            let v = it.next().ok_or(format!("--{flag} needs a value"))?;
            flags.insert(flag, v.as_str());
        } else {
            words.push(a.as_str());
        }
    }
    Ok((words, flags))
}

/// A flag's value as a whole number of at least 0 (`--amount`: at least 1).
fn number<T: std::str::FromStr + Into<i64> + Copy>(
    flags: &HashMap<&str, &str>,
    name: &str,
) -> Result<Option<T>, String> {
    let least = if name == "amount" { 1 } else { 0 };
    flags
        .get(name)
        .map(|v| match v.parse::<T>() {
            Ok(n) if n.into() >= least => Ok(n),
            _ => Err(format!(
                "--{name} must be a whole number of at least {least}, not {v:?}"
            )),
        })
        .transpose()
}

async fn run(args: &[String]) -> Result<(), String> {
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return Ok(());
    }
    let (words, flags) = parse(args)?;
    let known = ["table", "name", "rate-limit", "credits", "user", "amount"];
    if let Some(bad) = flags.keys().find(|k| !known.contains(k)) {
        return Err(format!("unknown flag --{bad}"));
    }
    let table = match flags.get("table") {
        Some(t) => t.to_string(),
        None => std::env::var("TABLE_NAME").map_err(|_| "set TABLE_NAME or pass --table".to_string())?,
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    // Keys and credits hold no sealed secret: the sealing key is not needed here.
    let store = DynamoStore::new(
        aws_sdk_dynamodb::Client::new(&sdk),
        table,
        None,
        std::time::Duration::ZERO,
    );
    match words.as_slice() {
        ["keys", "create"] => {
            let name = flags.get("name").ok_or("keys create needs --name")?;
            let key = runconvert_http::generate_key();
            let user = store
                .create_user_with_key(name, &key, number(&flags, "rate-limit")?, number(&flags, "credits")?)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("user {}", user.id);
            println!("{key}");
            Ok(())
        }
        ["credits", "add"] => {
            let user = flags.get("user").ok_or("credits add needs --user")?;
            let amount: i64 = number(&flags, "amount")?.ok_or("credits add needs --amount")?;
            match store.add_credits(user, amount).await.map_err(|e| e.to_string())? {
                Some(balance) => {
                    println!("{balance}");
                    Ok(())
                }
                None => Err(format!("no user {user}")),
            }
        }
        _ => Err(USAGE.to_string()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runconvert-aws: {e}");
            ExitCode::FAILURE
        }
    }
}
