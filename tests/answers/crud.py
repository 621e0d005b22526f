"""Answers to the crud assignment (tests/answers/__init__.py says how they are graded)."""

from answers import correct, wrong

ANSWERS = {
    "add-users": [
        correct(
            "flush-each",
            '''
            def add_users(session, names):
                ids = []
                for name in names:
                    user = User(name=name)
                    session.add(user)
                    session.flush()
                    ids.append(user.id)
                return ids
            ''',
        ),
        correct(
            "insert-returning",
            '''
            from sqlalchemy import insert


            def add_users(session, names):
                if not names:
                    return []
                statement = insert(User).returning(User.id, sort_by_parameter_order=True)
                return list(session.scalars(statement, [{"name": name} for name in names]))
            ''',
        ),
        correct(
            "identity-after-flush",
            '''
            from sqlalchemy import inspect


            def add_users(session, names):
                users = list(map(lambda name: User(name=name), names))
                session.add_all(users)
                session.flush()
                return [inspect(user).identity[0] for user in users]
            ''',
        ),
        correct(
            "ids-in-a-second-loop",
            '''
            def add_users(session, names):
                new_users = []
                for name in names:
                    new_users.append(User(name=name))
                    session.add(new_users[-1])
                session.flush()
                ids = []
                for user in new_users:
                    ids.append(int(user.id))
                return ids
            ''',
        ),
        wrong(
            "ids-before-flush",
            '''
            def add_users(session, names):
                users = [User(name=name) for name in names]
                session.add_all(users)
                return [user.id for user in users]
            ''',
            "the id exists as soon as the object is added",
        ),
        wrong(
            "commits-the-callers-session",
            '''
            def add_users(session, names):
                users = [User(name=name) for name in names]
                session.add_all(users)
                session.commit()
                return [user.id for user in users]
            ''',
            "the function decides when the caller's work is kept",
            keeps=1,
        ),
        wrong(
            "a-session-of-its-own",
            '''
            def add_users(session, names):
                with Session(engine) as own:
                    users = [User(name=name) for name in names]
                    own.add_all(users)
                    own.commit()
                    return [user.id for user in users]
            ''',
            "any session will do: the caller's transaction does not matter",
            keeps=1,
        ),
        wrong(
            "returns-the-users",
            '''
            def add_users(session, names):
                users = [User(name=name) for name in names]
                session.add_all(users)
                session.flush()
                return users
            ''',
            "an object stands for its id",
        ),
        wrong(
            "adds-only-the-last",
            '''
            def add_users(session, names):
                users = []
                for name in names:
                    user = User(name=name)
                    users.append(user)
                session.add(user)
                session.flush()
                return [user.id for user in users]
            ''',
            "constructing a User puts it in the session",
        ),
    ],
    "find-user": [
        correct(
            "scalar-one-or-none",
            '''
            def find_user(session, name):
                return session.execute(select(User).filter_by(name=name)).scalar_one_or_none()
            ''',
        ),
        correct(
            "legacy-query",
            '''
            def find_user(session, name):
                return session.query(User).filter(User.name == name).one_or_none()
            ''',
        ),
        correct(
            "counted-by-hand",
            '''
            def find_user(session, name):
                users = session.scalars(select(User).where(User.name == name)).all()
                if len(users) > 1:
                    raise MultipleResultsFound(f"{len(users)} users are called {name!r}")
                return users[0] if users else None
            ''',
        ),
        wrong(
            "first",
            '''
            def find_user(session, name):
                return session.scalars(select(User).where(User.name == name)).first()
            ''',
            "first() is the safe one_or_none()",
        ),
        wrong(
            "one",
            '''
            def find_user(session, name):
                return session.scalars(select(User).where(User.name == name)).one()
            ''',
            "one() returns None when nothing matches",
        ),
        wrong(
            "a-row",
            '''
            def find_user(session, name):
                return session.execute(select(User).where(User.name == name)).one_or_none()
            ''',
            "execute() returns the objects themselves",
        ),
        wrong(
            "closes-the-callers-session",
            '''
            def find_user(session, name):
                with session:
                    return session.scalars(select(User).where(User.name == name)).one_or_none()
            ''',
            "a function may end the session it was handed once it is done with it",
        ),
        wrong(
            "case-insensitive",
            '''
            from sqlalchemy import func


            def find_user(session, name):
                statement = select(User).where(func.lower(User.name) == name.lower())
                return session.scalars(statement).one_or_none()
            ''',
            "names match whatever their case",
            keeps=1,
        ),
        wrong(
            "sql-text-with-the-name-pasted-in",
            '''
            from sqlalchemy import text


            def find_user(session, name):
                query = text(f"SELECT * FROM users WHERE name = '{name}'")
                return session.scalars(select(User).from_statement(query)).one_or_none()
            ''',
            "a name can be pasted into SQL",
            keeps=1,
        ),
        wrong(
            "a-session-of-its-own",
            '''
            def find_user(session, name):
                with Session(engine) as own:
                    return own.scalars(select(User).where(User.name == name)).one_or_none()
            ''',
            "any session's object is as good as the caller's",
        ),
    ],
    "rename-user": [
        correct(
            "update-statement",
            '''
            from sqlalchemy import update


            def rename_user(session, user_id, new_name):
                result = session.execute(
                    update(User).where(User.id == user_id).values(name=new_name)
                )
                if result.rowcount == 0:
                    raise LookupError(user_id)
                return session.get(User, user_id)
            ''',
        ),
        correct(
            "get-or-raise",
            '''
            def rename_user(session, user_id, new_name):
                if (user := session.get(User, user_id)) is None:
                    raise LookupError(f"no user {user_id}")
                user.name = new_name
                return user
            ''',
        ),
        correct(
            "select-setattr-flush",
            '''
            def rename_user(session, user_id, new_name):
                user = session.scalars(select(User).where(User.id == user_id)).one_or_none()
                if not user:
                    raise LookupError(user_id)
                setattr(user, "name", new_name)
                session.flush()
                return user
            ''',
        ),
        wrong(
            "session-begin-inside",
            '''
            def rename_user(session, user_id, new_name):
                with session.begin():
                    user = session.get(User, user_id)
                    if user is None:
                        raise LookupError(user_id)
                    user.name = new_name
                return user
            ''',
            "a function opens (and commits) the transaction of a session it was handed",
        ),
        wrong(
            "commits-the-callers-session",
            '''
            def rename_user(session, user_id, new_name):
                user = session.get(User, user_id)
                if user is None:
                    raise LookupError(user_id)
                user.name = new_name
                session.commit()
                return user
            ''',
            "the function decides when the caller's work is kept",
            keeps=1,
        ),
        wrong(
            "merge-a-new-object",
            '''
            def rename_user(session, user_id, new_name):
                return session.merge(User(id=user_id, name=new_name))
            ''',
            "merge() updates a row that exists and fails otherwise",
            keeps=1,
        ),
        wrong(
            "none-for-an-unknown-id",
            '''
            def rename_user(session, user_id, new_name):
                user = session.get(User, user_id)
                if user is None:
                    return None
                user.name = new_name
                return user
            ''',
            "None is as good as an error",
            keeps=1,
        ),
        wrong(
            "sql-text-update",
            '''
            from sqlalchemy import text


            def rename_user(session, user_id, new_name):
                result = session.execute(
                    text("UPDATE users SET name = :name WHERE id = :id"),
                    {"name": new_name, "id": user_id},
                )
                if result.rowcount == 0:
                    raise LookupError(user_id)
                return session.get(User, user_id)
            ''',
            "an UPDATE in SQL text also changes the objects the session holds",
            keeps=1,
        ),
    ],
    "delete-user": [
        correct(
            "delete-statement",
            '''
            from sqlalchemy import delete


            def delete_user(session, user_id):
                return session.execute(delete(User).where(User.id == user_id)).rowcount == 1
            ''',
        ),
        correct(
            "select-delete-flush",
            '''
            def delete_user(session, user_id):
                user = session.scalars(select(User).where(User.id == user_id)).one_or_none()
                if user is None:
                    return False
                session.delete(user)
                session.flush()
                return True
            ''',
        ),
        correct(
            "is-not-none",
            '''
            def delete_user(session, user_id):
                user = session.get(User, user_id)
                if user:
                    session.delete(user)
                return user is not None
            ''',
        ),
        wrong(
            "a-new-object-with-the-id",
            '''
            def delete_user(session, user_id):
                session.delete(User(id=user_id))
                return True
            ''',
            "an object with the right id stands for the row",
        ),
        wrong(
            "commits-the-callers-session",
            '''
            def delete_user(session, user_id):
                user = session.get(User, user_id)
                if user is None:
                    return False
                session.delete(user)
                session.commit()
                return True
            ''',
            "the function decides when the caller's work is kept",
            keeps=1,
        ),
        wrong(
            "no-check-for-none",
            '''
            def delete_user(session, user_id):
                session.delete(session.get(User, user_id))
                return True
            ''',
            "get() raises for an unknown id",
            keeps=1,
        ),
        wrong(
            "returns-the-user",
            '''
            def delete_user(session, user_id):
                user = session.get(User, user_id)
                if user is not None:
                    session.delete(user)
                return user
            ''',
            "a truthy object is as good as True",
        ),
        wrong(
            "delete-without-where",
            '''
            from sqlalchemy import delete


            def delete_user(session, user_id):
                user = session.get(User, user_id)
                if user is None:
                    return False
                session.execute(delete(User))
                return True
            ''',
            "a delete statement is about the object just loaded",
        ),
    ],
    "find-or-create": [
        correct(
            "scalar-then-flush",
            '''
            def find_or_create(session, name):
                user = session.scalar(select(User).filter_by(name=name))
                if user is None:
                    user = User(name=name)
                    session.add(user)
                    session.flush()
                return user
            ''',
        ),
        correct(
            "legacy-query-or",
            '''
            def find_or_create(session, name):
                found = session.query(User).filter_by(name=name).first()
                if found:
                    return found
                created = User(name=name)
                session.add(created)
                return created
            ''',
        ),
        correct(
            "execute-scalars-first",
            '''
            def find_or_create(session, name):
                rows = session.execute(select(User).where(User.name == name)).scalars()
                existing = rows.first()
                if existing is not None:
                    return existing
                session.add(new := User(name=name))
                return new
            ''',
        ),
        wrong(
            "always-creates",
            '''
            def find_or_create(session, name):
                user = User(name=name)
                session.add(user)
                return user
            ''',
            "add() finds an existing row with the same values",
        ),
        wrong(
            "looks-in-a-session-of-its-own",
            '''
            def find_or_create(session, name):
                with Session(engine) as own:
                    user = own.scalars(select(User).where(User.name == name)).one_or_none()
                if user is None:
                    user = User(name=name)
                    session.add(user)
                return user
            ''',
            "any session sees the same objects",
        ),
        wrong(
            "autoflush-turned-off",
            '''
            def find_or_create(session, name):
                with session.no_autoflush:
                    user = session.scalars(select(User).where(User.name == name)).one_or_none()
                if user is None:
                    user = User(name=name)
                    session.add(user)
                return user
            ''',
            "a query sees pending objects without a flush",
        ),
        wrong(
            "merge-finds-or-creates",
            '''
            def find_or_create(session, name):
                return session.merge(User(name=name))
            ''',
            "merge() looks objects up by their values",
        ),
        wrong(
            "commits-the-callers-session",
            '''
            def find_or_create(session, name):
                user = session.scalars(select(User).where(User.name == name)).one_or_none()
                if user is None:
                    user = User(name=name)
                    session.add(user)
                    session.commit()
                return user
            ''',
            "the function decides when the caller's work is kept",
            keeps=1,
        ),
        wrong(
            "starts-with-a-clean-session",
            '''
            def find_or_create(session, name):
                session.rollback()
                user = session.scalars(select(User).where(User.name == name)).one_or_none()
                if user is None:
                    user = User(name=name)
                    session.add(user)
                return user
            ''',
            "the session's other work can be thrown away",
        ),
    ],
}
